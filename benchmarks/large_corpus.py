"""Start-up cost of a large corpus: the first run (encodes and caches) and a later run (maps the
cache), wall time and peak RSS of `chargpt-tui train`, 20 tiny steps. Issue 16's targets for a
120 MB corpus: first ≤ 30 s and ≤ 1.2 GB, later ≤ 12 s and ≤ 0.8 GB.

    python benchmarks/large_corpus.py [--megabytes 120 1000] [--workdir /tmp/large-corpus]

The corpus is generated: Python standard-library sources (the running Python's), shuffled in
100 kB slices, with a line of CJK characters after each slice, ~8.7k distinct characters as in
the issue's source-code corpus. Each run is a fresh process measured by a parent of its own
(RUSAGE_CHILDREN), with its own empty token cache for the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 8600)]
MEASURE = """
import resource, subprocess, sys, time
start = time.monotonic()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def generate(path: Path, size: int) -> None:
    rng = random.Random(0)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    source = "".join(p.read_text(errors="replace") for p in sorted(stdlib.glob("*.py"))[:200])
    with path.open("w", encoding="utf-8") as handle:
        written = 0
        while written < size:
            start = rng.randrange(len(source) - 100_000)
            block = source[start : start + 100_000]
            block += "# " + "".join(rng.choice(CJK) for _ in range(200)) + "\n"
            handle.write(block)
            written += len(block.encode())


def measure(command: list[str], cache: Path) -> dict[str, float | int]:
    env_command = ["env", f"CHARGPT_TUI_CACHE={cache}", *command]
    reply = subprocess.run([sys.executable, "-c", MEASURE, *env_command], check=True,
                           capture_output=True, text=True)
    wall, rss_kib, code = reply.stdout.split()
    return {"wall_s": round(float(wall), 2), "peak_rss_mb": round(int(rss_kib) / 1024),
            "exit": int(code)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, nargs="+", default=[120])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/large-corpus"))
    parser.add_argument("--runs", type=int, default=2, help="later runs per size")
    parser.add_argument("--executable", default=str(Path(sys.executable).with_name("chargpt-tui")),
                        help="the chargpt-tui to measure (e.g. another checkout's, to compare)")
    options = parser.parse_args()
    options.workdir.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    print(json.dumps({"cpu": cpu, "load_1m": round(os.getloadavg()[0], 2),
                      "python": platform.python_version()}), flush=True)
    exe = options.executable
    for megabytes in options.megabytes:
        corpus = options.workdir / f"corpus-{megabytes}mb.txt"
        if not corpus.exists():
            started = time.monotonic()
            generate(corpus, megabytes * 1_000_000)
            print(json.dumps({"generated": str(corpus), "bytes": corpus.stat().st_size,
                              "s": round(time.monotonic() - started, 1)}), flush=True)
        cache = options.workdir / f"cache-{megabytes}"
        shutil.rmtree(cache, ignore_errors=True)
        out = options.workdir / "runs"
        for run in ["first"] + ["later"] * options.runs:
            shutil.rmtree(out, ignore_errors=True)
            command = [exe, "train", "--data", str(corpus), "--preset", "tiny", "--max-iters",
                       "20", "--device", "cpu", "--threads", "1", "--json", "--out", str(out)]
            result = measure(command, cache)
            print(json.dumps({"megabytes": megabytes, "run": run, "executable": exe, **result,
                              "load_1m": round(os.getloadavg()[0], 2)}),
                  flush=True)
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
