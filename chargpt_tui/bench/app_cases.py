"""Cases 5 and 7: what the Textual app costs (training with the app running, start-up).

The only bench module that imports the app, and only inside its cases, so importing the
bench (e.g. for ``--help``) never loads Textual."""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from chargpt_tui.bench.engine_cases import BackgroundTraining
from chargpt_tui.bench.harness import (
    ALPHABET,
    BenchContext,
    CaseResult,
    Shape,
    Target,
    Variant,
    alternate,
    first_line,
    paired_ratios,
)
from chargpt_tui.events import Event, StepDone
from chargpt_tui.train import Trainer

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


async def app_training_window(ctx: BenchContext, shape: Shape, prompt_text: str,
                              seconds: float | None = None) -> tuple[TrainingWindow, int]:
    """Run the real app headless (120×40, every panel live) training ``shape`` for ``seconds``
    (default: the plan's window); type a prompt every ``ui_prompt_every`` seconds through the
    prompt line. Returns the window and how many prompts were typed."""
    from chargpt_tui.tui.app import ChargptApp
    from chargpt_tui.tui.session import TrainSession
    from chargpt_tui.tui.sources import TrainNew
    from chargpt_tui.tui.widgets.prompt_input import PromptInput

    seconds = ctx.plan.ui_window_seconds if seconds is None else seconds
    prompt_every = ctx.plan.ui_prompt_every
    app = ChargptApp(TrainNew(lambda _progress, _notice: ctx.run_setup(shape)),
                     show_timing=False)
    holds: list[list[float]] = []
    step_times: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StepDone):
            step_times.append(time.perf_counter())

    prompts = 0
    async with app.run_test(headless=True, size=(120, 40)) as pilot:
        session = app.session
        assert isinstance(session, TrainSession)
        await wait_for(lambda: session.trainer is not None, "the app's trainer")
        assert session.trainer is not None
        # Every hold the app takes (prompts, the next-character view) goes through this control.
        session.trainer.control.hold_spans = holds
        session.trainer.bus.subscribe(on_event)
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
        # An Enter still queued when the app closes would meet an empty screen stack (seen on
        # a loaded machine): let the app handle what was sent before closing it.
        await pilot.pause()
    # Closing the app stops training at a step boundary; let it, so the next measurement
    # does not share the cores with it.
    await wait_for(lambda: not session.running, "the app's training to stop")
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

    def engine_alone(window_seconds: float = seconds) -> float:
        with BackgroundTraining(ctx, shape) as training:
            start = time.perf_counter()
            time.sleep(window_seconds)
            window = TrainingWindow(list(training.step_times), start, time.perf_counter(),
                                    training.tokens_per_step)
        windows["engine"].append(window)
        return window.steady_rate()

    def with_app(window_seconds: float = seconds) -> float:
        window, typed = asyncio.run(app_training_window(ctx, shape, prompt_text,
                                                        window_seconds))
        windows["app"].append(window)
        prompts.append(typed)
        return window.steady_rate()

    # Each repeat starts a fresh trainer (and app): the warm-up pays for importing Textual, in a
    # short window (only the repeats' windows are reported).
    warm = min(1.0, seconds)
    samples = alternate([
        Variant("engine alone (no app)", engine_alone, lambda: engine_alone(warm)),
        Variant("with the app, outside prompts", with_app, lambda: with_app(warm))],
        plan.repeats)
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
from chargpt_tui.tui.sources import OpenCheckpoint
imported = time.monotonic()

class FirstPaint(ChargptApp):
    def on_ready(self) -> None:
        print(imported, time.monotonic(), flush=True)
        self.exit()

FirstPaint(OpenCheckpoint(Path(sys.argv[1])), device="cpu").run(headless=True, size=(120, 40))
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
