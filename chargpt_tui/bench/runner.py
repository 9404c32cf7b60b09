"""Running every case and reporting: what ``chargpt-tui bench`` prints."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from chargpt_tui.bench.app_cases import bench_startup, bench_ui_cost
from chargpt_tui.bench.engine_cases import (
    bench_answer_while_training,
    bench_beam,
    bench_first_char,
    bench_sampling,
    bench_training,
)
from chargpt_tui.bench.harness import BenchContext, Case, CaseResult, cpu_name, make_plan
from chargpt_tui.device import on_own_thread, pick_device

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
            # Each case on a thread that ends with it: torch work on a thread that outlives it
            # (this one) would slow the next case's background training (device.py).
            results.append(on_own_thread(case, ctx))
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
