"""What a step in micro-batches costs: training speed with the batch in 1, 2, 3 and 4 slices
(the app lets a waiting prompt in between slices, so a prompt waits for a slice, not a step).

    python benchmarks/micro_batches.py [--preset cpu] [--steps 10] [--rounds 3] [--threads N]

The variants alternate round by round; the medians are compared as ratios from the same run.
The app's choice (train.APP_MICRO_BATCHES) should cost ≤ 5% (issue 20: app ≥ 0.95× headless
outside prompts). Appends one JSON line to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from chargpt_tui.bench.harness import cpu_name
from chargpt_tui.device import machine_load
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--slices", default="1,2,3,4")
    parser.add_argument("--data", default=os.environ.get("CHARGPT_TUI_DATA", "shakespeare"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results"
                        / "micro_batches.jsonl")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = prepare_run(data=args.data, preset=args.preset, device="cpu",
                        out=Path("/tmp/micro-batches-bench-unused"),
                        overrides={"max_iters": 10**6, "time_budget": None})
    trainer = Trainer(setup)
    slices = [int(n) for n in args.slices.split(",")]
    step_seconds: dict[int, list[float]] = {n: [] for n in slices}
    load_before = machine_load()[0]
    trainer.train_step()  # warm-up
    for _ in range(args.rounds):
        for n in slices:
            trainer.micro_batches = n
            started = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step()
            step_seconds[n].append((time.perf_counter() - started) / args.steps)
    medians = {n: statistics.median(t) for n, t in step_seconds.items()}
    row = {"preset": args.preset, "threads": torch.get_num_threads(),
           "step_ms": {n: 1000 * t for n, t in medians.items()},
           "speed_vs_whole": {n: medians[slices[0]] / t for n, t in medians.items()},
           "load_average": [load_before, machine_load()[0]], "cores": machine_load()[1],
           "cpu": cpu_name(), "torch": torch.__version__, "steps": args.steps,
           "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with args.out.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
    for n in slices:
        print(f"{n} slice(s): {1000 * medians[n]:7.1f} ms a step, "
              f"{row['speed_vs_whole'][n]:.3f}× the whole batch's speed, a slice "
              f"{1000 * medians[n] / n:.1f} ms")
    print(f"{args.preset} preset, {row['threads']} thread(s), load {load_before:.1f}"
          f"→{row['load_average'][1]:.1f} on {row['cores']} cores, {row['cpu']}")


if __name__ == "__main__":
    main()
