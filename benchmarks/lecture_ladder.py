"""The lecture's ladder against its published numbers, one seed per run.

    python benchmarks/lecture_ladder.py --data ../shared/data/tinyshakespeare.txt \
        --seeds 1337 2024 [--through layernorm] [--device cpu]

Runs ``chargpt-tui lecture --json`` once per seed and writes
``benchmarks/results/lecture_<device>_seed<seed>.json``: the ladder's table, the machine (CPU
name, cores, load average before and after) and the command's wall time. The target: every
rung through layernorm within ±0.06 of the lecture's val loss.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from chargpt_tui.bench.harness import cpu_name

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.06


def run_seed(seed: int, args: argparse.Namespace, out_root: Path) -> dict[str, object]:
    out = out_root / f"lecture-seed{seed}"
    command = [sys.executable, "-m", "chargpt_tui", "lecture", "--json", "--seed", str(seed),
               "--through", args.through, "--device", args.device, "--out", str(out)]
    if args.data:
        command += ["--data", args.data]
    load_before = os.getloadavg()
    started = time.monotonic()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # On a shared machine wall time measures the load; CPU time is what the ladder itself used.
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    if done.returncode:
        raise SystemExit(f"seed {seed} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    table = json.loads(done.stdout)
    rows = table["rungs"]
    for row in rows:
        row["off_by"] = row["val_loss"] - row["lecture_val_loss"]
        row["within_target"] = abs(row["off_by"]) <= TOLERANCE
    return {"seed": seed, "command": " ".join(command[1:]), "wall_seconds": wall,
            "cpu_seconds": cpu,
            "cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_before,
            "load_after": os.getloadavg(), "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 2024])
    parser.add_argument("--through", default="layernorm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-root", type=Path, default=Path("runs"))
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for seed in args.seeds:
        record = run_seed(seed, args, args.out_root)
        path = RESULTS / f"lecture_{args.device}_seed{seed}.json"
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"seed {seed}: {record['wall_seconds']:.0f} s wall, {record['cpu_seconds']:.0f} s "
              f"CPU → {path}")
        for row in record["table"]["rungs"]:  # type: ignore[index]
            print(f"  {row['rung']:<12} val {row['val_loss']:.4f}  lecture "
                  f"{row['lecture_val_loss']:.2f}  ({row['off_by']:+.3f})  {row['seconds']:.1f} s"
                  f"  {row['steps']} steps")


if __name__ == "__main__":
    main()
