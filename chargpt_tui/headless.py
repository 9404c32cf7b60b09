"""The headless view: rich progress for ``chargpt-tui train`` and streamed text for ``sample``.

Like the TUI, it only subscribes to the engine's events; it never reaches into the trainer.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.durations import format_duration
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    EvalProgress,
    Event,
    EventBus,
    Notice,
    SampleChunk,
    StateChanged,
    StepDone,
)
from chargpt_tui.exit_codes import EXIT_OUTPUT_CLOSED, stop_on_signals
from chargpt_tui.run_setup import (
    RunSetup,
    continue_command,
    sample_at_evaluations,
    sample_command,
)
from chargpt_tui.runs import CHECKPOINT_NAME
from chargpt_tui.sampling import (
    SamplingParams,
    prepare_prompt,
    stream_beam_text,
    stream_text,
)
from chargpt_tui.train import Trainer, TrainResult


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader is gone, so later writes (and Python's
    exit-time flush) neither fail nor print a second complaint."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # no real stdout (e.g. under a test runner): nothing to silence


class OutputConsole(Console):
    """A console that reports a closed stdout/stderr as an error the caller can act on.

    Rich's default answer to a broken pipe is ``SystemExit(1)`` from whatever thread printed:
    during training that would end the run without saving it.
    """

    def on_broken_pipe(self) -> None:
        silence_stdout()
        raise BrokenPipeError("standard output closed")


@contextlib.contextmanager
def download_progress(enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback for downloads that draws a rich bar on stderr (only if one starts)."""
    with bytes_bar((TextColumn("downloading"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn()), enabled) as update:
        yield update


ENCODING_BAR_DELAY_S = 2.0


@contextlib.contextmanager
def encoding_progress(enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback for a corpus's first encoding: a rich bar on stderr, drawn only once
    the work has taken ``ENCODING_BAR_DELAY_S`` (a small or already cached text shows none)."""
    with bytes_bar((TextColumn("encoding the text (once; later runs read the cache)"),
                    BarColumn(), DownloadColumn(), TimeRemainingColumn()), enabled,
                   delay=ENCODING_BAR_DELAY_S) as update:
        yield update


@contextlib.contextmanager
def bytes_bar(columns: tuple[ProgressColumn, ...], enabled: bool, delay: float = 0.0
              ) -> Iterator[Callable[[int, int | None], None]]:
    """A callback ``(bytes done, total)`` that draws a transient bar on stderr, started at the
    first call made ``delay`` seconds or more after the first (never: no empty line at the end)."""
    progress = Progress(*columns, console=Console(stderr=True), transient=True,
                        disable=not enabled)
    began: list[float] = []
    task: list[TaskID] = []

    def update(done: int, total: int | None) -> None:
        now = time.monotonic()
        if not began:
            began.append(now)
        if not task:
            if now - began[0] < delay:
                return
            progress.start()
            task.append(progress.add_task("bytes", total=total))
        progress.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            progress.stop()


def clock_text(seconds: float) -> str:
    """72.4 → '1:12', 3725 → '1:02:05': a clock's face."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class BudgetClockColumn(ProgressColumn):
    """The time budget's clock, ``0:12 / 1:00``, read at every refresh: it moves during a long
    evaluation too, and matches the wall clock (counted from the command's start)."""

    def __init__(self, started: float, seconds: float) -> None:
        super().__init__()
        self.started, self.seconds = started, seconds

    def render(self, task: Task) -> Text:
        used = min(time.monotonic() - self.started, self.seconds + 59)
        return Text(f"{clock_text(used)} / {clock_text(self.seconds)}", style="yellow")


def steps_text(step: int, max_iters: int | None, estimated: bool) -> str:
    """'120/300', or '120/~900' for a time budget's estimate, '3/~?' before the pace is known."""
    if max_iters is None:
        return f"{step}/~?"
    return f"{step}/{'~' if estimated else ''}{max_iters}"


@contextlib.contextmanager
def quiet_control_keys() -> Iterator[None]:
    """While the bar is live, the terminal does not echo ``^C``: the echo lengthens the bar's
    line past the width, the terminal wraps it, and the bar is then left on screen twice."""
    try:
        import termios
    except ImportError:  # no termios (Windows)
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        termios.tcsetattr(fd, termios.TCSANOW,
                          [*saved[:3], saved[3] & ~termios.ECHOCTL, *saved[4:]])
    except (termios.error, OSError, ValueError):  # stdin is not a terminal
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def run_headless_training(setup: RunSetup, as_json: bool = False) -> TrainResult:
    """Train with a rich progress bar (or silently for ``--json``); returns the result.

    Under torchrun only rank 0 shows anything; the other ranks train silently.
    """
    console = OutputConsole(stderr=as_json, highlight=False)
    sample_at_evaluations(setup)
    bus = EventBus()
    trainer = Trainer(setup, bus)
    if not trainer.is_main:
        with stop_on_signals(trainer.control.stop):
            return trainer.run()
    budget = setup.train_config.time_budget
    estimated = trainer.clock_decides  # the step count is the clock's estimate
    timing: tuple[ProgressColumn, ...] = (
        (BudgetClockColumn(setup.started, budget),) if budget
        else (TimeElapsedColumn(), TimeRemainingColumn()))
    columns = (TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[steps]}"),
               TextColumn("{task.fields[status]}"), *timing)
    progress = Progress(*columns, console=console, disable=as_json, refresh_per_second=8)
    total = None if estimated else setup.train_config.max_iters
    # Under a budget the bar fills with the clock; else with the steps.
    task = progress.add_task("train", total=budget or total,
                             completed=0 if budget else trainer.step, status="starting…",
                             steps=steps_text(trainer.step, total, estimated))
    # Notices go to stderr; while the bar is live on the same terminal they go through its
    # console instead, which prints them above the bar (a console of their own would not).
    notices = OutputConsole(stderr=True, highlight=False)
    if not as_json and console.is_terminal and notices.is_terminal:
        notices = console
    last = {"status": "", "sample": "", "sample_step": -1}

    def show(event: Event) -> None:
        if isinstance(event, StepDone):
            last["status"] = f"loss {event.loss:.3f}  {event.tokens_per_second:,.0f} tok/s"
            steps = steps_text(event.step, event.max_iters, estimated)
            if event.budget_used is not None:
                progress.update(task, completed=event.budget_used, status=last["status"],
                                steps=steps)
            else:
                progress.update(task, completed=event.step, total=event.max_iters,
                                status=last["status"], steps=steps)
        elif isinstance(event, EvalProgress):
            progress.update(task, status=f"evaluating {event.done}/{event.total}")
        elif isinstance(event, EvalDone):
            best = ("" if event.best_step in (None, event.step)
                    else f"  (best {event.best_val_loss:.4f} @ step {event.best_step})")
            progress.console.print(f"step {event.step:>6}: train {event.train_loss:.4f}  "
                                   f"val {event.val_loss:.4f}{best}")
        elif isinstance(event, SampleChunk):
            if event.step != last["sample_step"]:
                last["sample"], last["sample_step"] = "", event.step
            last["sample"] = str(last["sample"]) + event.text
        elif isinstance(event, CheckpointSaved) and event.reason != "eval":
            progress.console.print(f"saved {escape(event.path)} (step {event.step})")
        elif isinstance(event, Notice):
            # soft_wrap: one message stays one line, however narrow the terminal.
            notices.print(f"[yellow]{event.level}:[/] {escape(event.message)}", soft_wrap=True)
        elif isinstance(event, StateChanged):
            if event.state == "evaluating":
                progress.update(task, status="evaluating…")
            elif event.state == "training":
                progress.update(task, status=last["status"])
            elif event.reason:
                progress.console.print(f"{event.state}: {escape(event.reason)}", soft_wrap=True)

    def show_or_stop(event: Event) -> None:
        """A view that cannot write must not crash training: save at the next step and stop."""
        try:
            show(event)
        except OSError:
            silence_stdout()
            progress.disable = True
            if not trainer.control.stopping:
                trainer.control.stop("standard output closed", EXIT_OUTPUT_CLOSED)
                with contextlib.suppress(OSError):
                    OutputConsole(stderr=True).print(
                        "[yellow]stopping:[/] standard output closed; saving a checkpoint first",
                        soft_wrap=True)

    bus.subscribe(show_or_stop)
    if not as_json:
        console.print(
            f"training {setup.model_config.n_layer}x{setup.model_config.n_embd} "
            f"({setup.preset}, {setup.recipe} recipe"
            f"{f', {format_duration(budget)} budget' if budget else ''}) "
            f"on {escape(setup.data_name)} · {setup.device}"
            f"{f' × {trainer.dist.world_size} processes' if trainer.dist else ''} · "
            f"{trainer.model.num_parameters() / 1e6:.2f}M parameters → {escape(str(setup.out_dir))}"
        )
    with stop_on_signals(trainer.control.stop), quiet_control_keys(), progress:
        result = trainer.run()
    if not as_json:
        show_the_end(console, setup, trainer, result,
                     str(last["sample"]) if last["sample_step"] == result.step else None)
    return result


def show_the_end(console: Console, setup: RunSetup, trainer: Trainer, result: TrainResult,
                 final_sample: str | None) -> None:
    """After the bar: a sample of what the model writes, and the commands to run next."""
    folder = setup.out_dir
    if result.state == "finished":
        if final_sample is None:  # no live sample at the end: write one (a budget has one)
            model, _ = trainer.snapshot()
            final_sample = "".join(stream_text(model, setup.tokenizer, prepare_prompt(
                setup.tokenizer, "\n", model.config.block_size),
                SamplingParams(max_new_tokens=300, temperature=0.8, seed=0)))
        console.rule(f"sample (step {result.step})")
        console.print(escape(final_sample), highlight=False)
        console.rule()
    if result.checkpoint is None:
        return
    if result.best_step == 0 and result.step > 0:
        console.print(f"note: best.pt holds the untrained weights of step 0 (no evaluation since "
                      f"beat them); {CHECKPOINT_NAME} holds step {result.step}", highlight=False)
    console.print(f"try: {escape(sample_command(folder, setup.data_name, setup.tokenizer.vocab))}",
                  highlight=False)
    if result.state != "failed":
        label = "continue training" if result.state == "stopped" else "train further"
        console.print(f"{label}: " + escape(continue_command(
            folder, setup.train_config, result.step, finished=result.state == "finished")),
            highlight=False)


def run_sample(checkpoint: Path, prompt_text: str, params: SamplingParams, *, device: str,
               as_json: bool, notice: Callable[[str], None], meta: Path | None = None) -> None:
    """Stream a continuation to stdout (plain) or print one JSON object (``--json``).
    ``meta``: a nanoGPT checkpoint's meta.pkl, when not where nanoGPT would look."""
    loaded = load_for_sampling(checkpoint, device, prefer_best=True, meta=meta)
    model, tokenizer, checkpoint = loaded.model, loaded.tokenizer, loaded.file
    notice(f"answering from {checkpoint} (step {loaded.step}"
           f"{': untrained weights' if loaded.step == 0 else ''})")
    prompt = prepare_prompt(tokenizer, prompt_text, model.config.block_size)
    for warning in prompt.warnings():
        notice(warning)
    out = sys.stdout
    result: dict[str, object] = {"prompt": prompt_text, "step": loaded.step,
                                 "checkpoint": str(checkpoint), **vars(params)}
    if params.beam_width > 1:
        shown = 0
        if not as_json:
            out.write(prompt_text)
        for update in stream_beam_text(model, tokenizer, prompt, params):
            if not as_json:  # stream the part every beam agrees on: it can no longer change
                out.write(update.stable)
                out.flush()
                shown += len(update.stable)
        beams = update.state.result(tokenizer)
        if beams.chars < params.max_new_tokens:
            notice(f"beam search stopped after {beams.chars} characters: every "
                   f"continuation would repeat a {params.no_repeat_ngram}-character sequence "
                   "(--no-repeat-ngram)")
        result.update(completion=beams.texts[0],
                      beams=[{"text": t, "score": s} for t, s in zip(beams.texts, beams.scores)])
        if not as_json:
            out.write(beams.texts[0][shown:] + "\n")
    else:
        pieces = []
        if not as_json:
            out.write(prompt_text)
        for piece in stream_text(model, tokenizer, prompt, params):
            pieces.append(piece)
            if not as_json:
                out.write(piece)
                out.flush()
        result["completion"] = "".join(pieces)
        if not as_json:
            out.write("\n")
    if as_json:
        result["warnings"] = prompt.warnings()
        out.write(json.dumps(result) + "\n")
    out.flush()
