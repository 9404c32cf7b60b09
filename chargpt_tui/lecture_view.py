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

from chargpt_tui.data import encode_corpus, load_dataset, split_tokens
from chargpt_tui.device import pick_device
from chargpt_tui.durations import format_duration
from chargpt_tui.events import EvalDone, Event, StepDone
from chargpt_tui.exit_codes import stop_on_signals
from chargpt_tui.ladder import CostEstimate, Ladder, RungResult, rungs_through
from chargpt_tui.lecture import Rung
from chargpt_tui.run_setup import RunSetup
from chargpt_tui.tokenizer import CharTokenizer
from chargpt_tui.train import Trainer


def seconds(value: float) -> str:
    """12.34 → '12.3s', 95.2 → '1m35s'."""
    return format_duration(round(value) if value >= 60 else round(value, 1))


def default_through(device_type: str) -> str:
    """The whole ladder on a GPU; on a CPU up to layernorm (scaled takes hours there)."""
    return "scaled" if device_type == "cuda" else "layernorm"


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
                      seconds(row.seconds), val, f"{row.lecture_val_loss:.2f}")
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
        cost = (f"{rung.name} on this {self.ladder.device.type.upper()}: "
                f"{estimate.step_seconds:.2f} s a step, so the lecture's "
                f"{rung.max_iters:,} steps would take about "
                f"{seconds(estimate.total_seconds)}")
        if budget is not None:
            cost += (f"; it gets {format_duration(budget)} (about "
                     f"{int(budget / estimate.step_seconds):,} steps, "
                     f"{estimate.eval_iters} batches per evaluation)")
        else:
            cost += " — Ctrl+C stops it and keeps it; --scaled-budget 10m caps it"
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
        results, stopped = self.ladder.results, self.ladder.stopped
        if self.as_json:
            sys.stdout.write(json.dumps(self.ladder.table()) + "\n")
            return
        if results:
            self.console.rule("the lecture, replayed")
            self.console.print(ladder_table(results))
        if stopped is not None:
            where = (f"during {stopped['during']} at step {stopped['step']} (its checkpoint is "
                     f"saved: --resume {self.ladder.out_dir / stopped['during']})"
                     if "during" in stopped else f"before {stopped['before']}")
            done = [r.rung for r in results if r.state == "finished"]
            self.console.print(f"[yellow]stopped[/] {escape(where)}: {escape(stopped['reason'])}."
                               f" Finished rungs: {', '.join(done) or 'none'}.")
        self.console.print(f"runs in {escape(str(self.ladder.out_dir))} · try: chargpt-tui "
                           f"runs {escape(str(self.ladder.out_dir))}")


def run_lecture(*, through: str | None, data: str | None, encoding: str, device: str,
                out: Path | None, seed: int, time_budget: float | None,
                scaled_budget: float | None, max_iters: int | dict[str, int] | None,
                eval_iters: int | None,
                threads: int | None, as_json: bool, progress: Callable[[int, int | None], None],
                notice: Callable[[str], None]) -> int:
    """Train the ladder and show it; returns the exit code (130 after Ctrl+C)."""
    torch_device = pick_device(device)
    through = through or default_through(torch_device.type)
    rungs_through(through)  # an unknown rung is reported before any data is loaded
    if through == "scaled" and torch_device.type != "cuda" and scaled_budget is None and (
            time_budget is None):
        notice("the scaled rung takes hours on a CPU; its cost is measured before it starts")
    source = load_dataset(data or "shakespeare", encoding=encoding, progress=progress,
                          notice=notice)
    encoded = encode_corpus(source, encoding, notice=notice)
    tokenizer = CharTokenizer(encoded.vocab)
    split = split_tokens(encoded.tokens, max(rung.block_size for rung in rungs_through(through)))
    ladder = Ladder(through=through, tokenizer=tokenizer, data=split, data_name=source.name,
                    device=torch_device, out_dir=out, seed=seed, time_budget=time_budget,
                    scaled_budget=scaled_budget, max_iters=max_iters, eval_iters=eval_iters,
                    threads=threads)
    view = LadderView(ladder, as_json)
    with stop_on_signals(ladder.stop):
        ladder.run(view)
    view.finish()
    return ladder.exit_code
