"""The bench's method: plans, variants run side by side in alternating order, results."""

from __future__ import annotations

import math
import platform
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from chargpt_tui.data import split_data
from chargpt_tui.model import GPTConfig, GPTLanguageModel
from chargpt_tui.presets import PRESETS
from chargpt_tui.run_setup import RunSetup
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.train import TrainConfig


def cpu_name() -> str:
    """The CPU's model name, for the machine line of every benchmark's output."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

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
    bracket: bool = False  # costly variants once, between two cheap runs (see measure_costly)
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
            answer_chars=40, prompt_chars=100, window_seconds=0.3, ui_window_seconds=0.8,
            ui_prompt_every=0.3, help_runs=2, bracket=True,
            compile_skip="not measured in the test-only tiny mode",
            notes=("tiny mode: test-sized shapes, the numbers mean nothing",))
    notes = []
    gpu_batch, past_block = gpu.batch_size, 1000
    compile_skip = ""
    if device.type != "cuda":
        gpu_batch, past_block = 4, 320
        notes += [f"--quick on {device.type}: the GPU shape trains at batch {gpu_batch}, "
                  f"not {gpu.batch_size}",
                  f"--quick on {device.type}: sampling past the block uses {past_block} new "
                  f"characters instead of 1000 (still past block_size {gpu.block_size})"]
        compile_skip = (f"skipped in --quick on {device.type}: compiling takes minutes on a few "
                        "cores; run without --quick to measure it")
    # Two repeats (A B, then B A) cancel a linear drift of the machine as three do, and so does
    # A B A where B is slow (sampling without the cache, beams). Lengths stay where a ratio
    # depends on them: the KV cache's gain grows with the context it saves.
    return replace(plan, gpu=replace(gpu, batch_size=gpu_batch), repeats=2, train_seconds=0.5,
                   sample_lengths=(250, past_block), beam_chars=150, answer_chars=150,
                   window_seconds=1.0, ui_window_seconds=4.0, ui_prompt_every=2.0,
                   help_runs=2, compile_skip=compile_skip, bracket=True,
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


def bracketed(cheap: Variant, costly: list[Variant]) -> dict[str, list[float]]:
    """Each costly variant measured once, between two runs of the cheap one (A B C A): a linear
    drift of the machine cancels in the mean of the two A's, as it does in A B B A, for half the
    costly runs. :func:`paired_ratios` compares each against that mean."""
    for variant in (cheap, *costly):
        (variant.warm_up or variant.run)()
    samples = {cheap.label: [cheap.run()]}
    for variant in costly:
        samples[variant.label] = [variant.run()]
    samples[cheap.label].append(cheap.run())
    return samples


def measure_costly(plan: BenchPlan, cheap: Variant, costly: list[Variant]
                   ) -> dict[str, list[float]]:
    """Cheap and costly variants side by side: alternated ``plan.repeats`` times, or (--quick)
    :func:`bracketed`."""
    if plan.bracket:
        return bracketed(cheap, costly)
    return alternate([cheap, *costly], plan.repeats)


def paired_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Per-repeat ratios (repeat i of A over repeat i of B: measured next to each other); one
    ratio against the mean of a bracketing pair (:func:`bracketed`)."""
    if len(numerators) != len(denominators):  # A B A: one B against the A's around it
        numerators, denominators = [statistics.fmean(numerators)], [
            statistics.fmean(denominators)]
    return [a / b if b else math.inf for a, b in zip(numerators, denominators, strict=True)]


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
