"""Cases 1-4 and 6: the engine alone (training, sampling, beam search, answering while
training). Nothing here imports the app."""

from __future__ import annotations

import functools
import math
import random
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch

from chargpt_tui.bench.harness import (
    ALPHABET,
    GPU_PEAK_FLOPS,
    BenchContext,
    CaseResult,
    Shape,
    Target,
    Variant,
    alternate,
    first_line,
    measure_costly,
    paired_ratios,
    sync,
)
from chargpt_tui.control import HOLD_WAIT_SECONDS, TrainerControl
from chargpt_tui.data import get_batch
from chargpt_tui.device import autocast_context, on_own_thread
from chargpt_tui.events import Event, EventBus, StepDone
from chargpt_tui.model import GPTConfig, GPTLanguageModel
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
                assert variant.warm_up is not None
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

        def run() -> None:
            drain(stream_tokens(model, start, params))
        return run

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
            Variant(labels[0], functools.partial(chars_per_second, cached(chars), chars, device),
                    cached(warm_chars)),
            Variant(labels[1], functools.partial(chars_per_second, uncached(chars), chars,
                                                 device), uncached(warm_chars)),
        ]
        samples = measure_costly(plan, variants[0], variants[1:])
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

    def greedy(length: int) -> Callable[[], None]:
        return lambda: drain(stream_tokens(model, start, SamplingParams(length, temperature=0.0)))

    def beams(width: int, length: int) -> Callable[[], None]:
        return lambda: drain(beam_search(model, start, SamplingParams(length, beam_width=width)))

    warm = min(16, chars)  # compiles nothing: a short warm-up
    greedy_variant = Variant("greedy", functools.partial(chars_per_second, greedy(chars), chars,
                                                         device), greedy(warm))
    beam_variants = [Variant(f"beam width {w}",
                             functools.partial(chars_per_second, beams(w, chars), chars, device),
                             beams(w, warm))
                     for w in (4, 8)]
    samples = measure_costly(plan, greedy_variant, beam_variants)
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


def steps_per_second(step_times: Sequence[float], start: float, end: float,
                     resumed_at_start: bool = False) -> float:
    """The pace of whole steps in a window: from the first to the last step that ended inside
    it or, where training (re)started at ``start`` (the window after a prompt), from ``start``
    itself, so a slow first step counts. A count of the steps per window is off by up to one
    step: ±12 % for a 1 s window at 8 steps/s, too coarse to compare two windows. NaN when too
    few steps ended in the window to time one."""
    ends = [t for t in step_times if start < t <= end]
    if resumed_at_start:
        ends.insert(0, start)  # where the first step began
    if len(ends) < 2 or ends[-1] <= ends[0]:
        return math.nan
    return (len(ends) - 1) / (ends[-1] - ends[0])


class BackgroundTraining:
    """A :class:`Trainer` running in a thread (as in the app), with the time of every step.

    ``rate(start, end)`` is the training throughput over a window of wall-clock time: the
    tokens of the steps that finished inside it, divided by its length.
    """

    def __init__(self, ctx: BenchContext, shape: Shape) -> None:
        self.bus = EventBus()
        # Built on the training thread itself, as the app does: its torch work (weight init)
        # then leaves no OpenMP team on the caller's thread (device.py says why that matters).
        self._setup = ctx.run_setup(shape)
        self.tokens_per_step = shape.batch_size * shape.block_size
        self.step_times: list[float] = []
        self.bus.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="bench-training", daemon=True)
        self._error: BaseException | None = None
        self._trainer: Trainer | None = None

    def _on_event(self, event: Event) -> None:
        if isinstance(event, StepDone):
            self.step_times.append(time.perf_counter())

    def _run(self) -> None:
        try:
            self._trainer = Trainer(self._setup, self.bus, prompts_cut_in=True)  # as the app
            self._trainer.run()
        except BaseException as error:  # noqa: BLE001 - re-raised on the main thread
            self._error = error

    @property
    def trainer(self) -> Trainer:
        assert self._trainer is not None, "the training thread has not built its trainer yet"
        return self._trainer

    def __enter__(self) -> BackgroundTraining:
        self._thread.start()
        while len(self.step_times) < 3 and self._thread.is_alive():  # past the first eval
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._trainer is not None:
            self._trainer.control.resume()
            self._trainer.control.stop("bench finished")
        self._thread.join()
        if self._error is not None:
            raise self._error

    @property
    def control(self) -> TrainerControl:
        return self.trainer.control

    def rate(self, start: float, end: float) -> float:
        """Tokens/s of the steps that ended in the window: how much training got done."""
        steps = sum(start < t <= end for t in self.step_times)
        return steps * self.tokens_per_step / (end - start)

    def pace(self, start: float, end: float, resumed_at_start: bool = False) -> float:
        """Tokens/s at which training ran in the window (see :func:`steps_per_second`)."""
        return (steps_per_second(self.step_times, start, end, resumed_at_start)
                * self.tokens_per_step)

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
    boundary, snapshot the weights, prefill the prompt, sample one character. Run it on a
    thread of its own, as the app does (``on_own_thread``).

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
            return 1000 * on_own_thread(time_to_first_char, training, ctx.tokenizer, prompt_text)[0]

        def while_training() -> float:
            training.control.resume()
            # Land the prompt at a random point inside a training step, as a user would.
            time.sleep(2 * step_seconds + rng.uniform(0, step_seconds))
            seconds, waited = on_own_thread(time_to_first_char, training, ctx.tokenizer,
                                            prompt_text)
            waits.append(1000 * waited)
            return 1000 * seconds

        samples = alternate([Variant("idle (training paused)", idle),
                             Variant("while training (hold)", while_training)], plan.repeats)
    for label, times in samples.items():
        measurement = result.add(label, "ms", times, f"worst {max(times):.1f} ms")
        key = "ttfc_idle" if label.startswith("idle") else "ttfc_training"
        result.targets.append(Target(key, f"first character ≤ 50 ms, {label}", 50.0, False,
                                     "ms", measurement.median))
    result.add("  of which waiting for training to park", "ms", waits[-plan.repeats:],
               f"worst {max(waits[-plan.repeats:]):.1f} ms")
    cropped = max(0, plan.prompt_chars - shape.block_size)
    result.notes.append(f"model: {shape.name} preset ({shape.n_layer} layers, {shape.n_embd} "
                        f"wide); the prompt's first {cropped} characters fall outside block "
                        f"{shape.block_size} and are cropped, as in the app" if cropped else
                        f"model: {shape.name} preset")
    result.notes.append(f"one training step takes ~{1000 * step_seconds:.0f} ms here: the held "
                        "sampler waits for the step to reach its next block (or to finish its "
                        "optimizer step)")
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
    training_windows: dict[str, list[float]] = {"before": [], "before naive": [],
                                                "during naive": [], "during hold": [],
                                                "after": []}
    with BackgroundTraining(ctx, shape) as training:

        def alone() -> float:
            training.pause_and_settle()
            rate = on_own_thread(answer, training, ctx.tokenizer, chars, False)
            training.control.resume()
            return rate

        def concurrent(hold: bool) -> float:
            training.control.resume()
            time.sleep(window)  # training alone: the "before" window
            start = time.perf_counter()
            rate = on_own_thread(answer, training, ctx.tokenizer, chars, hold)
            end = time.perf_counter()
            time.sleep(window)  # nobody touches training: it must recover by itself
            if hold:
                training_windows["before"].append(training.pace(start - window, start))
                training_windows["during hold"].append(training.rate(start, end))
                training_windows["after"].append(training.pace(end, end + window,
                                                               resumed_at_start=True))
            else:  # how much training got done beside the prompt: steps counted, both sides
                training_windows["before naive"].append(training.rate(start - window, start))
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
        training_windows["during naive"], training_windows["before naive"]))
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
