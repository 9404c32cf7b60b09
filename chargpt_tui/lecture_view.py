"""``chargpt-tui lecture``, headless: a progress bar per rung, its row and a sample after it,
the whole table at the end (or one JSON object). A view over :class:`~chargpt_tui.ladder.Ladder`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chargpt_tui.durations import format_duration
from chargpt_tui.events import EvalDone, Event, StepDone
from chargpt_tui.exit_codes import stop_on_signals
from chargpt_tui.ladder import (
    CostEstimate,
    Ladder,
    RungResult,
    cost_note,
    format_seconds,
    prepare_ladder,
    stop_summary,
)
from chargpt_tui.lecture import Rung
from chargpt_tui.run_setup import RunSetup
from chargpt_tui.train import Trainer


def ladder_table(results: list[RungResult], title: str | None = None) -> Table:
    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0), title=title)
    table.add_column("rung", no_wrap=True)
    table.add_column("what it adds")
    for column in ("parameters", "steps", "time", "val loss", "lecture"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in results:
        val = "-" if row.val_loss is None else f"{row.val_loss:.4f}"
        if row.state != "finished":
            val += f" ({row.state})"
        table.add_row(row.rung, row.adds, f"{row.parameters:,}", f"{row.steps:,}",
                      format_seconds(row.seconds), val, f"{row.lecture_val_loss:.2f}")
    return table


class LadderView:
    """Draws one rung at a time; prints nothing but the final JSON with ``as_json``."""

    def __init__(self, ladder: Ladder, as_json: bool) -> None:
        self.ladder, self.as_json = ladder, as_json
        self.console = Console(stderr=as_json, highlight=False, quiet=as_json)
        self.progress: Progress | None = None
        ladder.bus.subscribe(self.on_event)

    def on_event(self, event: Event) -> None:
        progress = self.progress
        if progress is None or not progress.tasks:
            return
        task = progress.tasks[0].id
        if isinstance(event, StepDone):
            progress.update(task, completed=event.step, total=event.max_iters,
                            status=f"loss {event.loss:.3f}")
        elif isinstance(event, EvalDone) and event.step:
            progress.console.print(f"  step {event.step:>5}: train {event.train_loss:.4f}  "
                                   f"val {event.val_loss:.4f}")

    def rung_starting(self, rung: Rung, setup: RunSetup, trainer: Trainer,
                      estimate: CostEstimate | None) -> None:
        config = setup.train_config
        if estimate is not None:
            self.say_cost(rung, estimate, config.time_budget)
        budget = (f", {format_duration(config.time_budget)} budget" if config.time_budget
                  else "")
        self.console.rule(f"[b]{rung.name}[/b]: {escape(rung.adds)}", align="left")
        self.console.print(
            f"{trainer.model.num_parameters():,} parameters · batch {config.batch_size} × "
            f"block {setup.model_config.block_size} · lr {config.learning_rate:g} · "
            f"{config.max_iters:,} steps{budget} → {escape(str(setup.out_dir))}")
        self.progress = Progress(TextColumn(f"  {rung.name}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 console=self.console, disable=self.as_json, transient=True)
        self.progress.add_task(rung.name, total=config.max_iters, status="")
        self.progress.start()

    def say_cost(self, rung: Rung, estimate: CostEstimate, budget: float | None) -> None:
        cost = cost_note(rung, estimate, budget, self.ladder.device.type, "Ctrl+C")
        self.console.print(f"[yellow]note:[/] {escape(cost)}")

    def rung_finished(self, result: RungResult) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.console.print(ladder_table([result]))
        if result.sample:
            self.console.print(f"[dim]sample ({len(result.sample)} characters):[/]")
            self.console.print(escape(result.sample), highlight=False)

    def finish(self) -> None:
        results = self.ladder.results
        if self.as_json:
            sys.stdout.write(json.dumps(self.ladder.table()) + "\n")
            return
        if results:
            self.console.rule("the lecture, replayed")
            self.console.print(ladder_table(results))
        if (summary := stop_summary(self.ladder)) is not None:
            self.console.print(f"[yellow]stopped[/] {escape(summary)}")
        self.console.print(f"runs in {escape(str(self.ladder.out_dir))} · try: chargpt-tui "
                           f"runs {escape(str(self.ladder.out_dir))}")


def run_lecture(*, through: str | None, data: str | None, encoding: str, device: str,
                out: Path | None, seed: int, time_budget: float | None,
                scaled_budget: float | None, max_iters: int | dict[str, int] | None,
                eval_iters: int | None,
                threads: int | None, as_json: bool, progress: Callable[[int, int | None], None],
                notice: Callable[[str], None]) -> int:
    """Train the ladder and show it; returns the exit code (130 after Ctrl+C)."""
    ladder = prepare_ladder(through=through, data=data, encoding=encoding, device=device,
                            out=out, seed=seed, time_budget=time_budget,
                            scaled_budget=scaled_budget, max_iters=max_iters,
                            eval_iters=eval_iters, threads=threads, progress=progress,
                            notice=notice)
    view = LadderView(ladder, as_json)
    with stop_on_signals(ladder.stop):
        ladder.run(view)
    view.finish()
    return ladder.exit_code
