"""Threads that don't thrash: training speed at fixed --threads values against the measured
choice (device.pick_threads), on the machine as it is and beside a competing 2-thread CPU job.

    python benchmarks/threads.py [--steps 20] [--rounds 3] [--data PATH] [--out FILE]

For the tiny and cpu presets, each condition alternates the variants (1 thread, every core,
auto) round by round, so a change in the machine's load hits them alike; the medians are
compared as ratios from the same run. Targets (issue 20): auto ≥ 0.8× the best fixed value
beside the competing job, ≥ 0.95× without it. Prints a table and appends one JSON line per
preset and condition to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from chargpt_tui.bench.harness import cpu_name
from chargpt_tui.device import machine_load, pick_threads, thread_candidates
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import Trainer

COMPETITOR = """
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
while True:
    a = (a @ a).tanh()
"""


@contextlib.contextmanager
def competing_job(enabled: bool) -> Iterator[None]:
    """A 2-thread CPU job (matmuls in a loop) in another process, while the block runs."""
    if not enabled:
        yield
        return
    job = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        time.sleep(2.0)  # let it start and load the cores
        yield
    finally:
        job.kill()
        job.wait()


def tokens_per_second(trainer: Trainer, steps: int) -> float:
    tokens = trainer.tconf.batch_size * trainer.mconf.block_size * steps
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return tokens / (time.perf_counter() - started)


def measure(preset: str, data: str, steps: int, rounds: int, loaded: bool) -> dict:
    setup = prepare_run(data=data, preset=preset, out=Path("/tmp/threads-bench-unused"),
                        overrides={"max_iters": 10**6, "time_budget": None}, device="cpu")
    trainer = Trainer(setup)
    most = max(thread_candidates())
    variants = sorted({1, most})
    speeds: dict[str, list[float]] = {name: [] for name in [*map(str, variants), "auto"]}
    picks: list[int] = []
    pick_seconds: list[float] = []
    with competing_job(loaded):
        load_before = machine_load()[0]
        for _ in range(rounds):
            for threads in variants:
                torch.set_num_threads(threads)
                trainer.train_step()  # a step on the new count before timing it
                speeds[str(threads)].append(tokens_per_second(trainer, steps))
            torch.set_num_threads(most)  # auto starts from torch's default, as a run does
            began = time.perf_counter()
            choice = pick_threads(trainer.probe_step, thread_candidates())
            pick_seconds.append(time.perf_counter() - began)
            picks.append(choice.threads)
            trainer.train_step()  # as for the fixed counts: a step on the new count first
            speeds["auto"].append(tokens_per_second(trainer, steps))
        load_after = machine_load()[0]
    torch.set_num_threads(most)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    best_fixed = max(v for k, v in medians.items() if k != "auto")
    return {"preset": preset, "competing_job": loaded, "tokens_per_second": medians,
            "auto_vs_best_fixed": medians["auto"] / best_fixed, "auto_picked": picks,
            "pick_seconds": statistics.median(pick_seconds),
            "load_average": [load_before, load_after], "cores": machine_load()[1],
            "cpu": cpu_name(), "torch": torch.__version__, "steps": steps, "rounds": rounds,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=os.environ.get("CHARGPT_TUI_DATA", "shakespeare"))
    parser.add_argument("--presets", default="tiny,cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results"
                        / "threads.jsonl")
    args = parser.parse_args()
    for preset in args.presets.split(","):
        for loaded in (False, True):
            row = measure(preset, args.data, args.steps, args.rounds, loaded)
            with args.out.open("a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")
            speeds = "  ".join(f"{k}: {v:,.0f}" for k, v in row["tokens_per_second"].items())
            target = 0.8 if loaded else 0.95
            verdict = "pass" if row["auto_vs_best_fixed"] >= target else "FAIL"
            print(f"{preset:5} {'beside a 2-thread job' if loaded else 'as the machine is':22} "
                  f"tok/s {speeds}  auto/best {row['auto_vs_best_fixed']:.2f} "
                  f"(≥ {target}: {verdict})  picked {row['auto_picked']} in "
                  f"{row['pick_seconds']:.2f} s  load {row['load_average'][0]:.1f}"
                  f"→{row['load_average'][1]:.1f} on {row['cores']} cores", flush=True)


if __name__ == "__main__":
    main()
