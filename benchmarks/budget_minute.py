"""A one-minute time budget, start to exit: how much of it trains, and what the user sees.

    python benchmarks/budget_minute.py [--preset cpu] [--budget 1m] [--data PATH] [--out FILE]

Runs ``chargpt-tui train --time-budget`` as a user would, once on the machine as it is and once
beside a competing 2-thread CPU job, and reads the run's own metrics.jsonl: the wall clock of
the whole command, the seconds spent in the "training" state (between the step-0 evaluation's
end and the run's end, evaluations and live samples left out), the steps, the evaluations and the
live samples. Targets (issue 20): on a loaded 2-core machine, training ≥ 70 % of the wall time and
≥ 2 live samples; the command fits its budget plus a few seconds. One JSON line per condition.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chargpt_tui.bench.harness import cpu_name

COMPETITOR = """
import torch
torch.set_num_threads(2)
a = torch.randn(512, 512)
while True:
    a = (a @ a).tanh()
"""


def training_seconds(events: list[dict]) -> float:
    """Seconds in the "training" state, from the state changes' time stamps."""
    total, since = 0.0, None
    for event in events:
        if event["event"] != "StateChanged":
            continue
        if event["state"] == "training" and since is None:
            since = event["time"]
        elif event["state"] != "training" and since is not None:
            total, since = total + event["time"] - since, None
    return total


def run_once(args: argparse.Namespace, folder: Path, loaded: bool) -> dict:
    competitor = (subprocess.Popen([sys.executable, "-c", COMPETITOR]) if loaded else None)
    try:
        started = time.monotonic()
        done = subprocess.run(
            [str(Path(sys.executable).with_name("chargpt-tui")), "train", "--preset", args.preset,
             "--time-budget", args.budget, "--data", args.data, "--out", str(folder), "--json"],
            capture_output=True, text=True, check=True)
        wall = time.monotonic() - started
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    result = json.loads(done.stdout)
    events = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
    kinds = [event["event"] for event in events]
    trained = training_seconds(events)
    return {"condition": "beside a 2-thread job" if loaded else "as it is",
            "preset": args.preset, "budget": args.budget, "wall_seconds": round(wall, 2),
            "training_seconds": round(trained, 2), "training_share": round(trained / wall, 3),
            "steps": result["step"], "evaluations": kinds.count("EvalDone"),
            "live_samples": sum(1 for e in events if e["event"] == "SampleChunk"
                                and e.get("final", True)),
            "best_val": result["best_val_loss"],
            "threads_notice": next((e["message"] for e in events if e["event"] == "Notice"), ""),
            "machine": cpu_name()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--budget", default="1m")
    parser.add_argument("--data", default="shakespeare")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "budget_minute.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for loaded in (False, True):
            row = run_once(args, Path(tmp) / ("loaded" if loaded else "idle"), loaded)
            print(json.dumps(row))
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
