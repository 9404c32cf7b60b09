"""The headless view: rich progress for ``chargpt-tui train`` and streamed text for ``sample``.

Like the TUI, it only subscribes to the engine's events; it never reaches into the trainer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.durations import format_duration
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    Event,
    EventBus,
    Notice,
    StateChanged,
    StepDone,
)
from chargpt_tui.exit_codes import EXIT_OUTPUT_CLOSED, SIGNAL_EXIT_CODES
from chargpt_tui.run_setup import RunSetup, sample_at_evaluations
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
    console = Console(stderr=True)
    progress = Progress(TextColumn("downloading"), BarColumn(), DownloadColumn(),
                        TransferSpeedColumn(), console=console, transient=True,
                        disable=not enabled)
    task: list[TaskID] = []

    def update(done: int, total: int | None) -> None:
        if not task:
            progress.start()
            task.append(progress.add_task("download", total=total))
        progress.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:  # stopping a bar that never started would still print an empty line
            progress.stop()


ENCODING_BAR_DELAY_S = 2.0


@contextlib.contextmanager
def encoding_progress(enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback for a corpus's first encoding: a rich bar on stderr, drawn only once
    the work has taken ``ENCODING_BAR_DELAY_S`` (a small or already cached text shows none)."""
    console = Console(stderr=True)
    progress = Progress(TextColumn("encoding the text (once; later runs read the cache)"),
                        BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=console,
                        transient=True, disable=not enabled)
    began: list[float] = []
    task: list[TaskID] = []

    def update(done: int, total: int | None) -> None:
        now = time.monotonic()
        if not began:
            began.append(now)
        if not task:
            if now - began[0] < ENCODING_BAR_DELAY_S:
                return
            progress.start()
            task.append(progress.add_task("encode", total=total))
        progress.update(task[0], completed=done, total=total)

    try:
        yield update
    finally:
        if task:
            progress.stop()


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP ask the trainer to stop at the next step (it saves first).

    The handler only sets a flag: saving inside a signal handler could interrupt a half-written
    optimizer step. A second Ctrl+C while stopping still only waits for that one save.
    """
    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        trainer.control.stop(f"received {name}", SIGNAL_EXIT_CODES[signum])

    previous = {sig: signal.signal(sig, handler) for sig in SIGNAL_EXIT_CODES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_headless_training(setup: RunSetup, as_json: bool = False) -> TrainResult:
    """Train with a rich progress bar (or silently for ``--json``); returns the result.

    Under torchrun only rank 0 shows anything; the other ranks train silently.
    """
    console = OutputConsole(stderr=as_json, highlight=False)
    sample_at_evaluations(setup)
    bus = EventBus()
    trainer = Trainer(setup, bus)
    if not trainer.is_main:
        with stop_on_signals(trainer):
            return trainer.run()
    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn())
    progress = Progress(*columns, console=console, disable=as_json, refresh_per_second=8)
    task = progress.add_task("train", total=setup.train_config.max_iters,
                             completed=trainer.step, status="")

    def show(event: Event) -> None:
        if isinstance(event, StepDone):
            # under a time budget max_iters is the clock's estimate of the steps it allows
            progress.update(task, completed=event.step, total=event.max_iters, status=(
                f"loss {event.loss:.3f}  {event.tokens_per_second:,.0f} tok/s"))
        elif isinstance(event, EvalDone):
            best = ("" if event.best_step in (None, event.step)
                    else f"  (best {event.best_val_loss:.4f} @ step {event.best_step})")
            progress.console.print(f"step {event.step:>6}: train {event.train_loss:.4f}  "
                                   f"val {event.val_loss:.4f}{best}")
        elif isinstance(event, CheckpointSaved) and event.reason != "eval":
            progress.console.print(f"saved {escape(event.path)} (step {event.step})")
        elif isinstance(event, Notice):
            # soft_wrap: one message stays one line, however narrow the terminal.
            OutputConsole(stderr=True).print(f"[yellow]{event.level}:[/] {escape(event.message)}",
                                       soft_wrap=True)
        elif isinstance(event, StateChanged) and event.reason:
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
        budget = setup.train_config.time_budget
        console.print(
            f"training {setup.model_config.n_layer}x{setup.model_config.n_embd} "
            f"({setup.preset}, {setup.recipe} recipe"
            f"{f', {format_duration(budget)} budget' if budget else ''}) "
            f"on {escape(setup.data_name)} · {setup.device}"
            f"{f' × {trainer.dist.world_size} processes' if trainer.dist else ''} · "
            f"{trainer.model.num_parameters() / 1e6:.2f}M parameters → {escape(str(setup.out_dir))}"
        )
    with stop_on_signals(trainer), progress:
        result = trainer.run()
    if not as_json and result.state == "finished":
        model, _ = trainer.snapshot()
        text = "".join(stream_text(model, setup.tokenizer, prepare_prompt(
            setup.tokenizer, "\n", model.config.block_size),
            SamplingParams(max_new_tokens=300, temperature=0.8, seed=0)))
        console.rule("sample")
        console.print(escape(text), highlight=False)
        console.rule()
        console.print(f"try: chargpt-tui sample --checkpoint {escape(str(setup.out_dir))} "
                      "--prompt 'ROMEO:'")
    return result


def run_sample(checkpoint: Path, prompt_text: str, params: SamplingParams, *, device: str,
               as_json: bool, notice: Callable[[str], None], meta: Path | None = None) -> None:
    """Stream a continuation to stdout (plain) or print one JSON object (``--json``).
    ``meta``: a nanoGPT checkpoint's meta.pkl, when not where nanoGPT would look."""
    loaded = load_for_sampling(checkpoint, device, prefer_best=True, meta=meta)
    model, tokenizer, checkpoint = loaded.model, loaded.tokenizer, loaded.file
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
