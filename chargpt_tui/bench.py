"""``chargpt-tui bench``: the project's speed claims, measured side by side in one process.

Method. Each comparison's variants run in the same process, one after the other and in
alternating order (A B, then B A, ...), after one warm-up run of each, several times. We report
the median and the *spread* (half the min–max range, relative to the median: 0.05 = ±5 %). A
target is checked on a ratio of two variants from the same run — the median of the per-repeat
ratios — so a slow or busy machine moves both sides together and the verdict stays meaningful.

Cases (issue 4):

1. training throughput — fused vs the lecture's per-head attention, compiled vs eager;
2. sampling throughput — the KV cache vs re-running the context every step;
3. beam search — widths 4 and 8 vs greedy on the same cache;
4. time to the first character of an answer — idle and while training runs in a thread;
5. UI cost — training with the Textual app running headless (live panels, prompts typed every
   few seconds) vs the engine alone;
6. answering a prompt while training runs — with and without ``TrainerControl.hold``;
7. start-up — wall time of ``chargpt-tui --help``, and (7b) from process start to the app's
   first paint.

The engine never imports Textual, and neither does this module at import time: case 5 imports
the app inside its function, and 7b runs it in a fresh process.

Speed does not depend on what the text says, so the bench trains on pseudo-random text over
Tiny Shakespeare's 65-character alphabet and samples from untrained weights: no download, no
checkpoint, the same work for every run.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from chargpt_tui.control import HOLD_WAIT_SECONDS, TrainerControl
from chargpt_tui.data import get_batch, split_data
from chargpt_tui.device import autocast_context, pick_device
from chargpt_tui.events import Event, EventBus, StepDone
from chargpt_tui.model import GPTConfig, GPTLanguageModel
from chargpt_tui.presets import PRESETS
from chargpt_tui.run_setup import RunSetup
from chargpt_tui.sampling import (
    SamplingParams,
    beam_search,
    generate,
    prepare_prompt,
    stream_tokens,
)
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.train import TrainConfig, Trainer, configure_optimizer

# Tiny Shakespeare's alphabet: the models here have the same vocabulary size (65) as the app's.
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MODES = ("full", "quick", "tiny")

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s from the vendors' datasheets, matched
# against torch.cuda.get_device_name() in this order (so "H100 PCIe" wins over "H100").
GPU_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756e12),
    (r"H100 NVL", 835e12),
    (r"H100|H200|GH200", 989e12),
    (r"A100", 312e12),
    (r"L40S", 362e12),
    (r"\bL4\b", 121e12),
    (r"\bA10\b", 125e12),
    (r"RTX 4090", 165e12),
    (r"RTX 3090", 71e12),
)


# --------------------------------------------------------------------------------------------
# Results.


@dataclass
class Measurement:
    """Repeated samples of one quantity: median, spread and the raw numbers."""

    unit: str
    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the min–max range relative to the median (0.05 means ±5 %)."""
        if len(self.samples) < 2 or self.median == 0:
            return 0.0
        return (max(self.samples) - min(self.samples)) / (2 * abs(self.median))

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "median": self.median, "spread": self.spread,
                "min": min(self.samples), "max": max(self.samples), "samples": self.samples}


@dataclass
class Row:
    """One measured variant of a case (or a ratio between two variants, unit "x")."""

    label: str
    value: Measurement
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    """A goal from the issue, checked on one number measured in this run."""

    key: str
    description: str
    goal: float
    at_least: bool  # True: the value must be ≥ goal; False: ≤ goal
    unit: str
    value: float | None = None  # None: could not be measured (``reason`` says why)
    reason: str = ""

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "description": self.description, "goal": self.goal,
                "comparison": ">=" if self.at_least else "<=", "unit": self.unit,
                "value": self.value, "passed": self.passed, "reason": self.reason}


@dataclass
class CaseResult:
    key: str
    number: str  # the case's number in issue 4
    title: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # variants not measured, with the reason
    seconds: float = 0.0  # how long the case took to run

    def add(self, label: str, unit: str, samples: list[float], note: str = "",
            **extra: Any) -> Measurement:
        measurement = Measurement(unit, samples)
        self.rows.append(Row(label, measurement, note, extra))
        return measurement

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number, "title": self.title,
            "rows": [{"label": r.label, "note": r.note, **r.value.to_dict(), **r.extra}
                     for r in self.rows],
            "targets": [t.key for t in self.targets],
            "notes": self.notes, "skipped": self.skipped, "seconds": self.seconds,
        }


# --------------------------------------------------------------------------------------------
# What to run: shapes and sizes per mode.


@dataclass(frozen=True)
class Shape:
    """A model shape plus the training batch to measure it at."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    dropout: float = 0.0

    def model_config(self, attention: str = "fused") -> GPTConfig:
        return GPTConfig(vocab_size=len(ALPHABET), block_size=self.block_size,
                         n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         dropout=self.dropout, attention=attention)

    def describe(self) -> str:
        return (f"{self.n_layer} layers, {self.n_head} heads, {self.n_embd} wide, "
                f"block {self.block_size}, batch {self.batch_size}")


def preset_shape(name: str) -> Shape:
    preset = PRESETS[name]
    return Shape(name, int(preset["n_layer"]), int(preset["n_head"]), int(preset["n_embd"]),
                 int(preset["block_size"]), int(preset["batch_size"]), float(preset["dropout"]))


@dataclass(frozen=True)
class BenchPlan:
    """How big every case is. ``full`` is the issue's spec; ``quick`` and ``tiny`` shrink it
    and say how in ``notes``."""

    mode: str
    cpu: Shape  # the CPU preset: training shape, and the model the app samples from on CPU
    gpu: Shape  # nanoGPT's GPU shape: sampling and beam search
    repeats: int
    train_seconds: float  # least time per training sample (more steps when steps are short)
    sample_lengths: tuple[int, int]  # new characters inside / past the GPU shape's block
    beam_chars: int
    answer_chars: int  # characters answered per prompt in case 6
    prompt_chars: int  # the prompt's length for time to first character
    window_seconds: float  # training windows before and after a prompt (case 6)
    ui_window_seconds: float  # training measured per repeat with and without the app (case 5)
    ui_prompt_every: float  # seconds between prompts typed into the app (case 5)
    help_runs: int  # fresh processes each for `--help` and the app's first paint (case 7)
    compile_skip: str  # why torch.compile is not measured ("" = measure it)
    notes: tuple[str, ...] = ()


def make_plan(mode: str, device: torch.device) -> BenchPlan:
    if mode not in MODES:
        raise ValueError(f"unknown bench mode {mode!r}")
    cpu, gpu = preset_shape("cpu"), preset_shape("gpu")
    plan = BenchPlan(mode=mode, cpu=cpu, gpu=gpu, repeats=5, train_seconds=2.0,
                     sample_lengths=(250, 1000), beam_chars=250, answer_chars=300,
                     prompt_chars=100, window_seconds=2.0, ui_window_seconds=10.0,
                     ui_prompt_every=3.0, help_runs=7, compile_skip="")
    if mode == "full":
        return plan
    if mode == "tiny":  # for the test suite: every code path in seconds, numbers meaningless
        return replace(
            plan, cpu=Shape("tiny-cpu", 1, 2, 16, 16, 4), gpu=Shape("tiny-gpu", 2, 2, 32, 32, 4),
            repeats=2, train_seconds=0.0, sample_lengths=(24, 48), beam_chars=12,
            answer_chars=40, prompt_chars=100, window_seconds=0.1, ui_window_seconds=0.8,
            ui_prompt_every=0.3, help_runs=2,
            compile_skip="not measured in the test-only tiny mode",
            notes=("tiny mode: test-sized shapes, the numbers mean nothing",))
    notes = []
    gpu_batch, past_block = gpu.batch_size, 1000
    compile_skip = ""
    if device.type != "cuda":
        gpu_batch, past_block = 4, 384
        notes += [f"--quick on {device.type}: the GPU shape trains at batch {gpu_batch}, "
                  f"not {gpu.batch_size}",
                  f"--quick on {device.type}: sampling past the block uses {past_block} new "
                  f"characters instead of 1000 (still past block_size {gpu.block_size})"]
        compile_skip = (f"skipped in --quick on {device.type}: compiling takes minutes on a few "
                        "cores; run without --quick to measure it")
    return replace(plan, gpu=replace(gpu, batch_size=gpu_batch), repeats=3, train_seconds=0.5,
                   sample_lengths=(250, past_block), beam_chars=150, answer_chars=200,
                   window_seconds=1.0, ui_window_seconds=5.0, ui_prompt_every=2.0,
                   help_runs=5, compile_skip=compile_skip,
                   notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# Running variants side by side.


@dataclass
class Variant:
    """One side of a comparison: ``run`` measures once and returns the number."""

    label: str
    run: Callable[[], float]
    warm_up: Callable[[], object] | None = None  # default: one ``run`` whose result is dropped


def alternate(variants: list[Variant], repeats: int) -> dict[str, list[float]]:
    """Warm every variant up, then measure them ``repeats`` times in alternating order (ABC,
    CBA, ABC, ...), so slow drifts of the machine hit every variant alike."""
    for variant in variants:
        (variant.warm_up or variant.run)()
    samples: dict[str, list[float]] = {v.label: [] for v in variants}
    for repeat in range(repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            samples[variant.label].append(variant.run())
    return samples


def paired_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-repeat ratios (repeat i of A over repeat i of B: measured next to each other)."""
    return [a / b if b else math.inf for a, b in zip(numerators, denominators)]


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer read afterwards includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


@dataclass
class BenchContext:
    """What every case gets: the plan, the device, a scratch folder and a progress logger."""

    plan: BenchPlan
    device: torch.device
    workdir: Path
    log: Callable[[str], None] = lambda _message: None
    tokenizer: CharTokenizer = field(default_factory=lambda: CharTokenizer(ALPHABET))
    text: str = field(init=False)
    runs: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        # Enough for a validation split that holds one full window of the largest block.
        length = max(20_000, 12 * (self.plan.gpu.block_size + 1))
        self.text = "".join(random.Random(0).choices(ALPHABET, k=length))

    def run_setup(self, shape: Shape, attention: str = "fused", compile: bool = False
                  ) -> RunSetup:
        """A training run at ``shape`` that evaluates once (at the start) and never stops."""
        self.runs += 1
        train_config = TrainConfig(max_iters=10**9, batch_size=shape.batch_size,
                                   eval_interval=10**9, eval_iters=1, compile=compile)
        return RunSetup(
            model_config=shape.model_config(attention), train_config=train_config,
            tokenizer=self.tokenizer, data=split_data(self.text, self.tokenizer,
                                                      shape.block_size),
            data_name="bench text", device=self.device,
            out_dir=self.workdir / f"run-{self.runs}", preset=shape.name)

    def sampling_model(self, shape: Shape) -> GPTLanguageModel:
        torch.manual_seed(0)
        model = GPTLanguageModel(shape.model_config()).to(self.device)
        return model.requires_grad_(False).eval()


Case = Callable[[BenchContext], CaseResult]


# --------------------------------------------------------------------------------------------
# Case 1: training throughput.


def flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs per token, as nanoGPT and the PaLM paper count them: 6 per weight (forward
    + backward) plus attention's 12·layers·heads·head_size·block. Embedding lookups are not
    matmuls, so their weights don't count."""
    model_weights = (12 * config.n_embd**2 * config.n_layer  # qkv, proj and the 4x MLP
                     + config.n_embd * config.vocab_size)  # lm_head
    attention = 12 * config.n_layer * config.n_head * config.head_size * config.block_size
    return 6 * model_weights + attention


def known_peak_flops(gpu_name: str) -> float | None:
    """The dense bf16 peak of a GPU by its name (first match in :data:`GPU_PEAK_FLOPS`)."""
    return next((peak for pattern, peak in GPU_PEAK_FLOPS if re.search(pattern, gpu_name)), None)


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """The device's bf16 peak FLOP/s, or None and why there is none."""
    if device.type != "cuda":
        return None, f"n/a on {device.type}"
    name = torch.cuda.get_device_name(device)
    if not torch.cuda.is_bf16_supported():
        return None, f"n/a: {name} trains in fp32 (no bf16)"
    peak = known_peak_flops(name)
    return peak, name if peak else f"n/a: no known peak for {name}"


class TrainsSteps(Protocol):
    """What the training variants time: the engine's Trainer, or the bare loop below."""

    tconf: TrainConfig
    mconf: GPTConfig
    device: torch.device

    def train_step(self) -> object: ...


class BareLoop:
    """The engine's model and optimizer in the shortest PyTorch training loop.

    Batch, forward, backward, clipping, AdamW: nothing else (no events, pause/stop checks,
    weight lock, learning-rate schedule or loss read-back). Timed next to the engine's own loop,
    it turns "how much does our bookkeeping cost?" into a measured ratio.
    """

    def __init__(self, setup: RunSetup) -> None:
        self.tconf, self.mconf, self.device = setup.train_config, setup.model_config, setup.device
        self.data = setup.data.train
        torch.manual_seed(self.tconf.seed)  # the same initial weights as the Trainer's
        self.model = GPTLanguageModel(self.mconf).to(self.device).train()
        self.optimizer = configure_optimizer(self.model, self.tconf, self.device)

    def train_step(self) -> torch.Tensor:
        x, y = get_batch(self.data, self.mconf.block_size, self.tconf.batch_size)
        x, y = x.to(self.device), y.to(self.device)
        with autocast_context(self.device):
            _, loss = self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tconf.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def training_rate(trainer: TrainsSteps, steps: int) -> float:
    """Tokens per second over ``steps`` real training steps (forward, backward, AdamW)."""
    tokens = steps * trainer.tconf.batch_size * trainer.mconf.block_size
    sync(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync(trainer.device)
    return tokens / (time.perf_counter() - start)


def training_variant(label: str, trainer: TrainsSteps, seconds: float) -> Variant:
    """Warm-up: two steps (the first allocates, or compiles); then enough steps per sample
    to fill ``seconds``."""
    steps = [1]

    def warm_up() -> None:
        trainer.train_step()
        sync(trainer.device)
        start = time.perf_counter()
        trainer.train_step()
        sync(trainer.device)
        steps[0] = max(1, math.ceil(seconds / (time.perf_counter() - start)))

    return Variant(label, lambda: training_rate(trainer, steps[0]), warm_up)


def bench_training(ctx: BenchContext) -> CaseResult:
    plan = ctx.plan
    result = CaseResult("training", "1", "Training throughput")
    peak, peak_note = peak_flops(ctx.device)
    for shape in (plan.cpu, plan.gpu):
        ctx.log(f"training at the {shape.name} shape ({shape.describe()})")
        trainers = {"fused": Trainer(ctx.run_setup(shape)),
                    "heads": Trainer(ctx.run_setup(shape, attention="heads"))}
        variants = [training_variant(f"{shape.name}: {kind} eager", trainer, plan.train_seconds)
                    for kind, trainer in trainers.items()]
        if shape is plan.cpu:
            variants.append(training_variant(f"{shape.name}: fused bare loop",
                                             BareLoop(ctx.run_setup(shape)), plan.train_seconds))
        if plan.compile_skip:
            result.skipped.append(f"{shape.name}: fused compiled — {plan.compile_skip}")
        else:
            compiled = Trainer(ctx.run_setup(shape, compile=True))
            variant = training_variant(f"{shape.name}: fused compiled", compiled,
                                       plan.train_seconds)
            ctx.log(f"compiling the {shape.name} shape (torch.compile)")
            started = time.perf_counter()
            try:
                variant.warm_up()  # compiles; measured once here, then alternated with the rest
            except Exception as error:  # noqa: BLE001 - any compiler failure means "skip it"
                result.skipped.append(f"{shape.name}: fused compiled — torch.compile failed "
                                      f"({first_line(error)})")
            else:
                result.notes.append(f"{shape.name}: torch.compile took "
                                    f"{time.perf_counter() - started:.0f} s before the first "
                                    "steps")
                variants.append(variant)
        samples = alternate(variants, plan.repeats)
        per_token = flops_per_token(shape.model_config())
        for label, rates in samples.items():
            rate = statistics.median(rates)
            mfu = rate * per_token / peak if peak else None
            note = (f"MFU {mfu:.1%}" if mfu is not None else f"MFU {peak_note}")
            result.add(label, "tokens/s", rates, f"{note}; {rate * per_token / 1e9:.1f} GFLOP/s",
                       mfu=mfu, model_flops_per_second=rate * per_token)
        fused, heads = (samples[f"{shape.name}: {k} eager"] for k in ("fused", "heads"))
        speedup = result.add(f"{shape.name}: fused / heads", "x", paired_ratios(fused, heads))
        if shape is plan.cpu:
            result.add(f"{shape.name}: engine / bare loop", "x",
                       paired_ratios(fused, samples[f"{shape.name}: fused bare loop"]),
                       "the Trainer's step against the same model in a bare PyTorch loop")
            result.targets.append(Target(
                "fused_vs_heads_cpu", "fused attention trains ≥ 1.35× the per-head path (CPU "
                "shape)", 1.35, True, "x", speedup.median))
        compiled_label = f"{shape.name}: fused compiled"
        if compiled_label in samples:
            result.add(f"{shape.name}: compiled / eager", "x",
                       paired_ratios(samples[compiled_label], fused))
    result.notes.append(f"shapes: {plan.cpu.name} = {plan.cpu.describe()}; "
                        f"{plan.gpu.name} = {plan.gpu.describe()}, dropout {plan.gpu.dropout}")
    result.notes.append("MFU counts 6 FLOPs per weight per token plus attention "
                        "(nanoGPT's estimate) against the GPU's dense bf16 peak")
    return result


# --------------------------------------------------------------------------------------------
# Case 2: sampling throughput; case 3: beam search.


def drain(tokens: Iterator[object]) -> None:
    for _ in tokens:
        pass


def chars_per_second(generate: Callable[[], object], chars: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    generate()
    sync(device)
    return chars / (time.perf_counter() - start)


def bench_sampling(ctx: BenchContext) -> CaseResult:
    plan, device = ctx.plan, ctx.device
    shape = plan.gpu
    result = CaseResult("sampling", "2", "Sampling throughput (batch 1)")
    model = ctx.sampling_model(shape)
    start = [ctx.tokenizer.stoi["\n"]]

    def cached(chars: int) -> Callable[[], object]:
        params = SamplingParams(max_new_tokens=chars, temperature=1.0, seed=0)
        return lambda: drain(stream_tokens(model, start, params))

    def uncached(chars: int) -> Callable[[], object]:
        def run() -> object:
            generator = torch.Generator(device=device).manual_seed(0)
            idx = torch.tensor([start], device=device)
            return generate(model, idx, chars, temperature=1.0, generator=generator)
        return run

    warm_chars = min(32, plan.sample_lengths[0])
    for chars in plan.sample_lengths:
        where = "inside" if len(start) + chars <= shape.block_size else "past"
        ctx.log(f"sampling {chars} characters ({where} the block) with and without the KV cache")
        labels = (f"{chars} chars: KV cache (refill)", f"{chars} chars: no cache (generate)")
        variants = [
            Variant(labels[0], lambda c=chars: chars_per_second(cached(c), c, device),
                    cached(warm_chars)),
            Variant(labels[1], lambda c=chars: chars_per_second(uncached(c), c, device),
                    uncached(warm_chars)),
        ]
        samples = alternate(variants, plan.repeats)
        for label in labels:
            result.add(label, "chars/s", samples[label], f"{where} block_size {shape.block_size}")
        speedup = result.add(f"{chars} chars: cache / no cache", "x",
                             paired_ratios(samples[labels[0]], samples[labels[1]]))
        result.targets.append(Target(
            f"kv_cache_{where}_block", f"KV cache ≥ 5× no-cache sampling, {chars} chars "
            f"({where} block_size)", 5.0, True, "x", speedup.median))
    result.notes.append(f"model: {shape.name} shape ({shape.n_layer} layers, {shape.n_head} "
                        f"heads, {shape.n_embd} wide, block {shape.block_size}), prompt: one "
                        "newline, temperature 1")
    return result


def bench_beam(ctx: BenchContext) -> CaseResult:
    plan, device = ctx.plan, ctx.device
    shape, chars = plan.gpu, plan.beam_chars
    result = CaseResult("beam_search", "3", "Beam search vs greedy (same KV cache)")
    model = ctx.sampling_model(shape)
    start = [ctx.tokenizer.stoi["\n"]]
    ctx.log(f"beam search widths 4 and 8 vs greedy, {chars} characters")

    def greedy() -> object:
        return drain(stream_tokens(model, start, SamplingParams(chars, temperature=0.0)))

    def beams(width: int) -> Callable[[], object]:
        return lambda: drain(beam_search(model, start, SamplingParams(chars, beam_width=width)))

    variants = [Variant("greedy", lambda: chars_per_second(greedy, chars, device))]
    variants += [Variant(f"beam width {w}", lambda w=w: chars_per_second(beams(w), chars, device))
                 for w in (4, 8)]
    samples = alternate(variants, plan.repeats)
    for label, rates in samples.items():
        result.add(label, "chars/s", rates)
    for width in (4, 8):
        cost = result.add(f"beam {width}: time per char / greedy's", "x",
                          paired_ratios(samples["greedy"], samples[f"beam width {width}"]))
        if width == 4:
            result.targets.append(Target("beam4_cost", "beam width 4 costs ≤ 2× greedy per "
                                         "character", 2.0, False, "x", cost.median))
    result.notes.append(f"model: {shape.name} shape, {chars} new characters from a newline")
    return result


# --------------------------------------------------------------------------------------------
# Cases 4 and 6: answering a prompt while a Trainer runs in a thread.


class BackgroundTraining:
    """A :class:`Trainer` running in a thread (as in the app), with the time of every step.

    ``rate(start, end)`` is the training throughput over a window of wall-clock time: the
    tokens of the steps that finished inside it, divided by its length.
    """

    def __init__(self, ctx: BenchContext, shape: Shape) -> None:
        self.bus = EventBus()
        self.trainer = Trainer(ctx.run_setup(shape), self.bus)
        self.tokens_per_step = shape.batch_size * shape.block_size
        self.step_times: list[float] = []
        self.bus.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="bench-training", daemon=True)
        self._error: BaseException | None = None

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StepDone):
            self.step_times.append(time.perf_counter())

    def _run(self) -> None:
        try:
            self.trainer.run()
        except BaseException as error:  # noqa: BLE001 - re-raised on the main thread
            self._error = error

    def __enter__(self) -> BackgroundTraining:
        self._thread.start()
        while len(self.step_times) < 3 and self._thread.is_alive():  # past the first eval
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.trainer.control.resume()
        self.trainer.control.stop("bench finished")
        self._thread.join()
        if self._error is not None:
            raise self._error

    @property
    def control(self) -> TrainerControl:
        return self.trainer.control

    def rate(self, start: float, end: float) -> float:
        steps = sum(start < t <= end for t in self.step_times)
        return steps * self.tokens_per_step / (end - start)

    def pause_and_settle(self) -> None:
        """Pause (as the user would) and wait until the current step has finished."""
        self.control.pause()
        with self.control.hold(wait=HOLD_WAIT_SECONDS):
            pass


def sampling_params(chars: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=chars, temperature=0.8, seed=0)


def time_to_first_char(training: BackgroundTraining, tokenizer: CharTokenizer,
                       prompt_text: str) -> tuple[float, float]:
    """The app's path from Enter to the first character: park training at its next step
    boundary, snapshot the weights, prefill the prompt, sample one character.

    Returns (seconds to the first character, seconds of it spent waiting for training to
    park)."""
    start = time.perf_counter()
    with training.control.hold(wait=HOLD_WAIT_SECONDS):
        parked = time.perf_counter()
        model, _step = training.trainer.snapshot()
        prompt = prepare_prompt(tokenizer, prompt_text, model.config.block_size)
        tokens = stream_tokens(model, prompt.ids, sampling_params(100))
        next(tokens)
        sync(training.trainer.device)
        elapsed = time.perf_counter() - start
        tokens.close()
    return elapsed, parked - start


def bench_first_char(ctx: BenchContext) -> CaseResult:
    plan = ctx.plan
    shape = plan.cpu
    result = CaseResult("first_char", "4", "Time to first character (the app's path)")
    rng = random.Random(1)
    prompt_text = "".join(rng.choices(ALPHABET, k=plan.prompt_chars))
    ctx.log(f"time to first character for a {plan.prompt_chars}-character prompt, idle and "
            "while training")
    with BackgroundTraining(ctx, shape) as training:
        step_seconds = (training.step_times[-1] - training.step_times[0]) / max(
            1, len(training.step_times) - 1)

        waits: list[float] = []

        def idle() -> float:
            training.pause_and_settle()
            return 1000 * time_to_first_char(training, ctx.tokenizer, prompt_text)[0]

        def while_training() -> float:
            training.control.resume()
            # Land the prompt at a random point inside a training step, as a user would.
            time.sleep(2 * step_seconds + rng.uniform(0, step_seconds))
            seconds, waited = time_to_first_char(training, ctx.tokenizer, prompt_text)
            waits.append(1000 * waited)
            return 1000 * seconds

        samples = alternate([Variant("idle (training paused)", idle),
                             Variant("while training (hold)", while_training)], plan.repeats)
    for label, times in samples.items():
        measurement = result.add(label, "ms", times, f"worst {max(times):.1f} ms")
        key = "ttfc_idle" if label.startswith("idle") else "ttfc_training"
        result.targets.append(Target(key, f"first character ≤ 50 ms, {label}", 50.0, False,
                                     "ms", measurement.median))
    result.add("  of which waiting for the step to end", "ms", waits[-plan.repeats:],
               f"worst {max(waits[-plan.repeats:]):.1f} ms")
    cropped = max(0, plan.prompt_chars - shape.block_size)
    result.notes.append(f"model: {shape.name} preset ({shape.n_layer} layers, {shape.n_embd} "
                        f"wide); the prompt's first {cropped} characters fall outside block "
                        f"{shape.block_size} and are cropped, as in the app" if cropped else
                        f"model: {shape.name} preset")
    result.notes.append(f"one training step takes ~{1000 * step_seconds:.0f} ms here: the held "
                        "sampler waits for the current step to end (at most one step)")
    return result


def answer(training: BackgroundTraining, tokenizer: CharTokenizer, chars: int,
           hold: bool) -> float:
    """Chars/s of one full answer from a fresh snapshot, with or without parking training."""
    start = time.perf_counter()
    if hold:
        with training.control.hold(wait=HOLD_WAIT_SECONDS):
            model, _ = training.trainer.snapshot()
            drain(stream_tokens(model, [tokenizer.stoi["\n"]], sampling_params(chars)))
    else:
        model, _ = training.trainer.snapshot()
        drain(stream_tokens(model, [tokenizer.stoi["\n"]], sampling_params(chars)))
    sync(training.trainer.device)
    return chars / (time.perf_counter() - start)


def bench_answer_while_training(ctx: BenchContext) -> CaseResult:
    plan = ctx.plan
    shape, chars, window = plan.cpu, plan.answer_chars, plan.window_seconds
    result = CaseResult("answer_while_training", "6", "Answering a prompt while training runs")
    ctx.log(f"answering {chars}-character prompts while training runs in a thread")
    training_windows: dict[str, list[float]] = {"before": [], "during naive": [], "during hold": [],
                                                "after": []}
    with BackgroundTraining(ctx, shape) as training:

        def alone() -> float:
            training.pause_and_settle()
            rate = answer(training, ctx.tokenizer, chars, hold=False)
            training.control.resume()
            return rate

        def concurrent(hold: bool) -> float:
            training.control.resume()
            time.sleep(window)  # training alone: the "before" window
            start = time.perf_counter()
            rate = answer(training, ctx.tokenizer, chars, hold=hold)
            end = time.perf_counter()
            time.sleep(window)  # nobody touches training: it must recover by itself
            if hold:
                training_windows["before"].append(training.rate(start - window, start))
                training_windows["during hold"].append(training.rate(start, end))
                training_windows["after"].append(training.rate(end, end + window))
            else:
                training_windows["during naive"].append(training.rate(start, end))
            return rate

        samples = alternate([Variant("prompt alone (training paused)", alone),
                             Variant("prompt while training, no hold", lambda: concurrent(False)),
                             Variant("prompt while training, hold", lambda: concurrent(True))],
                            plan.repeats)
    # Warm-up runs are not part of the windows: keep the measured repeats only.
    training_windows = {k: v[-plan.repeats:] for k, v in training_windows.items()}
    for label, rates in samples.items():
        result.add(label, "chars/s", rates)
    labels = {"before": "training alone (window before the prompt)",
              "during naive": "training during a prompt, no hold",
              "during hold": "training during a prompt, hold (parked)",
              "after": "training after the prompt (window after)"}
    for key, label in labels.items():
        result.add(label, "tokens/s", training_windows[key])
    alone_rates = samples["prompt alone (training paused)"]
    held = result.add("prompt with hold / alone", "x",
                      paired_ratios(samples["prompt while training, hold"], alone_rates))
    result.add("prompt without hold / alone", "x",
               paired_ratios(samples["prompt while training, no hold"], alone_rates))
    training_naive = result.add("training during naive prompt / before", "x", paired_ratios(
        training_windows["during naive"], training_windows["before"]))
    recovered = result.add("training after / before", "x",
                           paired_ratios(training_windows["after"], training_windows["before"]))
    result.targets.append(Target("answer_while_training", "a prompt while training gets ≥ 0.5× "
                                 "the chars/s of one alone (hold)", 0.5, True, "x", held.median))
    result.targets.append(Target("training_recovers", "training is back to full speed after "
                                 "the prompt (≥ 0.9× the window before)", 0.9, True, "x",
                                 recovered.median))
    result.notes.append(
        f"model: {shape.name} preset, {chars} characters from a newline at temperature 0.8; "
        f"training windows of {window:g} s; torch uses {torch.get_num_threads()} intra-op "
        "threads per computation")
    result.notes.append(
        f"without a hold both computations ask for {torch.get_num_threads()} threads at once "
        f"and oversubscribe the cores (training fell to {training_naive.median:.2f}×); "
        "torch.set_num_threads is process-wide, so rather than shrink both, the hold runs one "
        "at a time, each with every thread")
    return result


# --------------------------------------------------------------------------------------------
# Case 5: what the running TUI costs training.


@dataclass
class TrainingWindow:
    """The training steps seen during one measured window, and when training was held.

    A step's time runs from the previous step's end to its own, so it includes everything the
    training thread does between steps (publishing events to the app's subscriber included).
    """

    step_times: list[float]  # perf_counter() when each step finished
    start: float
    end: float
    tokens_per_step: int
    holds: list[list[float]] = field(default_factory=list)  # [start, end] of each hold

    def _steps(self) -> list[tuple[float, float]]:
        times = [t for t in self.step_times if self.start <= t <= self.end]
        return list(zip(times, times[1:]))

    def _touches_hold(self, begin: float, end: float) -> bool:
        return any(hold_start < end and begin < hold_end for hold_start, hold_end in self.holds)

    def steady_rate(self) -> float:
        """Tokens/s over the steps that no hold touched (a hold parks training on purpose)."""
        free = [(a, b) for a, b in self._steps() if not self._touches_hold(a, b)]
        seconds = sum(b - a for a, b in free)
        return len(free) * self.tokens_per_step / seconds if seconds else 0.0

    def overall_rate(self) -> float:
        """Tokens/s over the whole window, prompts included."""
        steps = sum(self.start < t <= self.end for t in self.step_times)
        return steps * self.tokens_per_step / (self.end - self.start)

    def held_share(self) -> float:
        """The share of the window's wall time during which some hold was in force."""
        spans = sorted((max(a, self.start), min(b, self.end)) for a, b in self.holds)
        held, covered_to = 0.0, self.start
        for begin, end in spans:
            begin = max(begin, covered_to)
            if end > begin:
                held += end - begin
                covered_to = end
        return held / (self.end - self.start)


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.01)


async def app_training_window(ctx: BenchContext, shape: Shape, prompt_text: str
                              ) -> tuple[TrainingWindow, int]:
    """Run the real app headless (120×40, every panel live) training ``shape``; type a prompt
    every ``ui_prompt_every`` seconds through the prompt line. Returns the window and how many
    prompts were typed."""
    from chargpt_tui.tui.app import ChargptApp
    from chargpt_tui.tui.widgets.prompt_input import PromptInput

    seconds, prompt_every = ctx.plan.ui_window_seconds, ctx.plan.ui_prompt_every
    app = ChargptApp(setup_factory=lambda _progress, _notice: ctx.run_setup(shape),
                     show_timing=False)
    holds: list[list[float]] = []
    step_times: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StepDone):
            step_times.append(time.perf_counter())

    prompts = 0
    async with app.run_test(headless=True, size=(120, 40)):
        await wait_for(lambda: app.training.trainer is not None, "the app's trainer")
        assert app.training.trainer is not None
        # Every hold the app takes (prompts, the next-character view) goes through this control.
        app.training.trainer.control.hold_spans = holds
        app.training.trainer.bus.subscribe(on_event)
        await wait_for(lambda: len(step_times) >= 3, "the app's first training steps")
        prompt_line = app.query_one(PromptInput)
        start = time.perf_counter()
        next_prompt, end = start + prompt_every / 2, start + seconds
        while (now := time.perf_counter()) < end:
            if now >= next_prompt:
                prompt_line.value = prompt_text  # as if typed: the next-character view updates
                app.simulate_key("enter")  # the key event a terminal sends; nothing waits on it
                prompts += 1
                next_prompt += prompt_every
            await asyncio.sleep(max(0.0, min(next_prompt, end) - time.perf_counter()))
        end = time.perf_counter()
    # Closing the app stops training at a step boundary; let it, so the next measurement
    # does not share the cores with it.
    await wait_for(lambda: not app.training.running, "the app's training to stop")
    return TrainingWindow(step_times, start, end, shape.batch_size * shape.block_size,
                          holds), prompts


def bench_ui_cost(ctx: BenchContext) -> CaseResult:
    plan = ctx.plan
    shape, seconds = plan.cpu, plan.ui_window_seconds
    result = CaseResult("ui_cost", "5", "UI cost: training with the app running")
    prompt_text = "".join(random.Random(2).choices(ALPHABET, k=plan.prompt_chars))
    ctx.log(f"training for {seconds:g} s windows with and without the app running headless")
    windows: dict[str, list[TrainingWindow]] = {"engine": [], "app": []}
    prompts: list[int] = []

    def engine_alone() -> float:
        with BackgroundTraining(ctx, shape) as training:
            start = time.perf_counter()
            time.sleep(seconds)
            window = TrainingWindow(list(training.step_times), start, time.perf_counter(),
                                    training.tokens_per_step)
        windows["engine"].append(window)
        return window.steady_rate()

    def with_app() -> float:
        window, typed = asyncio.run(app_training_window(ctx, shape, prompt_text))
        windows["app"].append(window)
        prompts.append(typed)
        return window.steady_rate()

    # Each repeat starts a fresh trainer (and app): the warm-up pays for importing Textual.
    samples = alternate([Variant("engine alone (no app)", engine_alone),
                         Variant("with the app, outside prompts", with_app)], plan.repeats)
    app_windows = windows["app"][-plan.repeats:]
    for label, rates in samples.items():
        result.add(label, "tokens/s", rates)
    ratio = result.add("with the app / engine alone (outside prompts)", "x", paired_ratios(
        samples["with the app, outside prompts"], samples["engine alone (no app)"]))
    result.add("with the app, whole window (prompts included)", "tokens/s",
               [w.overall_rate() for w in app_windows])
    result.add("training lost to prompts (1 − whole / outside)", "share",
               [1 - w.overall_rate() / w.steady_rate() if w.steady_rate() else 0.0
                for w in app_windows],
               "training is parked while a prompt is answered, by design")
    typed = prompts[-plan.repeats:]
    result.add("  time training was held", "share", [w.held_share() for w in app_windows],
               f"{statistics.median(typed):g} prompt(s) per window", prompts=typed)
    result.targets.append(Target("ui_cost", "the running TUI costs training ≤ 5 % (app / "
                                 "engine alone ≥ 0.95×, outside prompts)", 0.95, True, "x",
                                 ratio.median))
    if ratio.median > 1.05:
        # Drawing the UI cannot speed training up: the machine's scheduling is what varied.
        result.notes.append(
            f"training ran {ratio.median:.2f}× faster with the app than without: on a busy or "
            "shared CPU, how torch's threads get scheduled swamps the UI's cost; rerun on a "
            "quiet machine before trusting this verdict")
    result.notes.append(
        f"model: {shape.name} preset; each repeat trains a fresh run for a {seconds:g} s "
        f"window; the app runs headless at 120×40 with every panel live and gets a "
        f"{plan.prompt_chars}-character prompt typed every {plan.ui_prompt_every:g} s")
    result.notes.append(
        "answering a prompt parks training on purpose (the app's CPU-sharing design), so the "
        "UI's cost is measured on the steps no hold touched; what prompts take from training "
        "is reported apart. Evaluations and live samples are off on both sides: engine work "
        "the app only shows")
    return result


# --------------------------------------------------------------------------------------------
# Case 7: start-up.

# Run in a fresh interpreter, so imports count. Textual posts ``Ready`` to the app once the
# first frame has been laid out and written (headless here: written to nowhere). It prints
# time.monotonic() after the imports and at that first paint: the clock is system-wide, so
# the parent subtracts the moment it started the process.
FIRST_PAINT_SCRIPT = """\
import sys, time
from pathlib import Path
from chargpt_tui.tui.app import ChargptApp
imported = time.monotonic()

class FirstPaint(ChargptApp):
    def on_ready(self) -> None:
        print(imported, time.monotonic(), flush=True)
        self.exit()

FirstPaint(checkpoint=Path(sys.argv[1]), device="cpu").run(headless=True, size=(120, 40))
"""


def help_command() -> list[str]:
    """The installed ``chargpt-tui`` script beside this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("chargpt-tui")
    if script.exists():
        return [str(script), "--help"]
    return [sys.executable, "-m", "chargpt_tui", "--help"]


def chat_checkpoint(ctx: BenchContext, shape: Shape) -> Path:
    """A checkpoint of one training step at ``shape``, for the app to open in chat-only mode."""
    setup = ctx.run_setup(shape)
    setup.train_config = replace(setup.train_config, max_iters=1)
    checkpoint = Trainer(setup).run().checkpoint
    assert checkpoint is not None, "a finished run always saves"
    return Path(checkpoint)


def bench_startup(ctx: BenchContext) -> CaseResult:
    result = CaseResult("startup", "7", "Start-up")
    command = help_command()
    ctx.log("timing `chargpt-tui --help` and the app's first paint")
    paint_command = [sys.executable, "-c", FIRST_PAINT_SCRIPT,
                     str(chat_checkpoint(ctx, ctx.plan.cpu))]
    import_seconds: list[float] = []

    def run_help() -> float:
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
        return time.perf_counter() - start

    def run_first_paint() -> float:
        start = time.monotonic()
        done = subprocess.run(paint_command, check=True, capture_output=True, text=True,
                              timeout=120)
        imported, painted = (float(word) for word in done.stdout.split()[-2:])
        import_seconds.append(imported - start)
        return painted - start

    variants = []
    for label, run, why in (("chargpt-tui --help", run_help, "chargpt-tui --help"),
                            ("app first paint (7b)", run_first_paint, "the app")):
        try:
            run()  # warm-up: the disk cache, .pyc files
        except (OSError, subprocess.SubprocessError, ValueError) as error:
            # A failed child's own last words say more than "exit status 1".
            said = getattr(error, "stderr", None) or ""
            reason = said.strip().splitlines()[-1][:160] if said.strip() else first_line(error)
            result.skipped.append(f"{why} could not run ({reason})")
            continue
        variants.append(Variant(label, run, warm_up=lambda: None))
    samples = alternate(variants, ctx.plan.help_runs)
    if "chargpt-tui --help" in samples:
        measurement = result.add("chargpt-tui --help", "s", samples["chargpt-tui --help"])
        result.targets.append(Target("help_startup", "`chargpt-tui --help` ≤ 0.5 s", 0.5, False,
                                     "s", measurement.median))
    else:
        result.targets.append(Target("help_startup", "`chargpt-tui --help` ≤ 0.5 s", 0.5, False,
                                     "s", reason="could not run the command"))
    if "app first paint (7b)" in samples:
        result.add("app first paint (7b): process start → first frame", "s",
                   samples["app first paint (7b)"], "chat-only mode, headless 120×40")
        result.add("  of which Python start-up and imports", "s",
                   import_seconds[-ctx.plan.help_runs:])
    result.notes.append(f"command: {' '.join(command)} (a fresh process each time)")
    result.notes.append(
        "7b: a fresh `python -c` per run builds the app as `chargpt-tui --checkpoint` does "
        "(opening a one-step checkpoint of the CPU shape, which loads in a worker after the "
        "paint) and runs it headless; the first paint is Textual's Ready event, sent once the "
        "first frame is written. Alternated with --help")
    return result


# Every case, in the order they run.
CASES: dict[str, Case] = {
    "training": bench_training,
    "sampling": bench_sampling,
    "beam_search": bench_beam,
    "first_char": bench_first_char,
    "ui_cost": bench_ui_cost,
    "answer_while_training": bench_answer_while_training,
    "startup": bench_startup,
}


# --------------------------------------------------------------------------------------------
# Running and reporting.


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": str(device), "device_name": name, "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def run_bench(mode: str = "full", device: str = "auto",
              log: Callable[[str], None] | None = None,
              cases: dict[str, Case] | None = None) -> dict[str, Any]:
    """Run every case and return the report as plain data (what ``--json`` prints)."""
    torch_device = pick_device(device)
    plan = make_plan(mode, torch_device)
    chosen = CASES if cases is None else cases
    results: list[CaseResult] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chargpt-bench-") as workdir:
        ctx = BenchContext(plan, torch_device, Path(workdir), log or (lambda _message: None))
        for case in chosen.values():
            case_started = time.perf_counter()
            results.append(case(ctx))
            results[-1].seconds = time.perf_counter() - case_started
    return {
        "mode": mode,
        "machine": describe_machine(torch_device),
        "notes": list(plan.notes),
        "seconds": time.perf_counter() - started,
        "cases": {r.key: r.to_dict() for r in results},
        "targets": [t.to_dict() for r in results for t in r.targets],
    }


def format_value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}×"
    if unit in ("tokens/s", "chars/s"):
        return (f"{value:,.0f}" if value >= 100 else f"{value:.1f}") + f" {unit}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "share":
        return f"{value:.1%}"
    return f"{value:g} {unit}"


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """The report as rich tables: every measurement, then the targets with pass/fail."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    machine = report["machine"]
    console.print(f"[bold]chargpt-tui bench[/] ({report['mode']}) · {machine['device']} "
                  f"({escape(machine['device_name'])}) · torch {machine['torch']} · "
                  f"{machine['threads']} threads ({machine['interop_threads']} inter-op) on "
                  f"{machine['cpu_count']} cores · {report['seconds']:.0f} s")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")
    table = Table(title="Measurements: median of alternated repeats, ± half their range",
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("case / variant")
    table.add_column("median", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("")
    notes = []
    for case in report["cases"].values():
        table.add_row(case["number"], f"[bold]{escape(case['title'])}[/]", "", "", "")
        for row in case["rows"]:
            table.add_row("", escape(row["label"]), format_value(row["median"], row["unit"]),
                          f"±{row['spread']:.0%}", escape(row["note"]))
        for skipped in case["skipped"]:
            table.add_row("", f"[yellow]{escape(skipped)}[/]", "skipped", "", "")
        notes += [f"{case['number']}: {note}" for note in case["notes"]]
    console.print(table)
    for note in notes:
        console.print(f"[dim]{escape(note)}[/]")
    targets = Table(title="Targets (each from this one run)", title_justify="left")
    for column in ("target", "measured", "goal", "result"):
        targets.add_column(column)
    verdicts = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}
    for target in report["targets"]:
        measured = (format_value(target["value"], target["unit"]) if target["value"] is not None
                    else escape(target["reason"]))
        goal = f"{target['comparison']} {format_value(target['goal'], target['unit'])}"
        targets.add_row(escape(target["description"]), measured, goal, verdicts[target["passed"]])
    console.print(targets)
