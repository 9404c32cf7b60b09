"""``chargpt-tui sweep``, headless: a line as each point starts and ends, then the leaderboard
(or one JSON object). A view over :class:`~chargpt_tui.sweep.Sweep`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from chargpt_tui.durations import format_duration
from chargpt_tui.exit_codes import stop_on_signals
from chargpt_tui.sweep import Sweep, SweepPoint


def leaderboard_table(sweep: Sweep) -> Table:
    table = Table(box=None, header_style="bold", padding=(0, 1, 0, 0))
    table.add_column("#", justify="right")
    table.add_column("point", no_wrap=True)
    for column in ("best val", "step", "tok/s", "parameters", "time"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("state")
    ranked = sweep.leaderboard()
    others = [p for p in sweep.points if p not in ranked]
    for rank, point in enumerate(ranked + others, start=1):
        table.add_row(
            str(rank) if point in ranked else "-", escape(point.name),
            "-" if point.best_val_loss is None else f"{point.best_val_loss:.4f}",
            "-" if point.best_step is None else f"{point.best_step:,}",
            "-" if point.tokens_per_second is None else f"{point.tokens_per_second:,.0f}",
            "-" if point.parameters is None else f"{point.parameters:,}",
            "-" if point.seconds is None else format_duration(round(point.seconds)),
            point.state)
    return table


def run_sweep(axes: dict[str, list[str]], train_args: list[str], *, out: Path | None,
              parallel: int, on_gpu: bool, as_json: bool, notice: Callable[[str], None]) -> int:
    """Run the grid and show it; returns the exit code (130 after Ctrl+C, 1 if all failed)."""
    if parallel > 1 and not on_gpu:
        notice(f"--parallel {parallel} is for a GPU: on a CPU the points would fight over the "
               "same cores (two torch processes slowed each other 45–60× here), so they run "
               "one after another")
        parallel = 1
    sweep = Sweep(axes, train_args, out_dir=out, parallel=parallel)
    console = Console(stderr=as_json, highlight=False, quiet=as_json)
    total = len(sweep.points)
    console.print(f"sweep of {total} points → {escape(str(sweep.out_dir))}"
                  f"{f' ({parallel} at a time)' if parallel > 1 else ''}")

    def show(point: SweepPoint) -> None:
        number = sweep.points.index(point) + 1
        if point.state == "training":
            console.print(f"[dim]{number}/{total}[/] {escape(point.name)}: training…")
            return
        outcome = (f"best val {point.best_val_loss:.4f} at step {point.best_step}"
                   if point.best_val_loss is not None else "")
        if point.error:
            outcome += ("; " if outcome else "") + point.error
        colour = {"finished": "green", "stopped": "yellow"}.get(point.state, "red")
        console.print(f"[dim]{number}/{total}[/] {escape(point.name)}: [{colour}]{point.state}"
                      f"[/] {escape(outcome)}")

    with stop_on_signals(sweep.stop):
        sweep.run(show)
    if as_json:
        sys.stdout.write(json.dumps(sweep.record()) + "\n")
    else:
        console.rule("leaderboard")
        console.print(leaderboard_table(sweep))
        for point in sweep.points:
            if point.error:
                console.print(f"[red]{escape(point.name)}[/]: {escape(point.error)}",
                              soft_wrap=True)
        if sweep.stopped is not None:
            not_started = ", ".join(sweep.stopped["not_started"]) or "none"
            console.print(f"[yellow]stopped[/]: {escape(sweep.stopped['reason'])}; points not "
                          f"started: {escape(not_started)}")
        console.print(f"sweep.json and the runs in {escape(str(sweep.out_dir))} · compare them: "
                      f"chargpt-tui --compare {escape(str(sweep.out_dir))}")
    failed = [p for p in sweep.points if p.state == "failed"]
    if failed and not as_json:
        notice(f"{len(failed)} of {total} points failed (see the leaderboard)")
    if sweep.exit_code:
        return sweep.exit_code
    return 1 if failed and len(failed) == total else 0
