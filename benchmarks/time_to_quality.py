"""Time to quality against nanoGPT, side by side in one run: the same corpus, the same wall clock.

Alternates, ``--rounds`` times:

* ours — ``chargpt-tui train --preset cpu --time-budget S`` (the whole command timed, start to
  exit);
* nanoGPT's own ``train.py`` with its README CPU recipe ("I only have a macbook": 4×4×128,
  block 64, batch 12, lr 1e-3, warmup 100, dropout 0), its schedule sized to the same S seconds
  from a calibration run of 40 iterations just before (so its cosine also ends on time).

Both final models are then evaluated the same way: mean loss on 400 fixed random batches of the
validation split (90/10, as nanoGPT's prepare.py splits it), each at its own context length.
nanoGPT is not part of this project: pass a checkout (``--nanogpt DIR``, with
``data/shakespeare_char`` prepared) and a Python that has numpy (``--nanogpt-python``).
One JSON line per run on stdout:

    python benchmarks/time_to_quality.py --data tinyshakespeare.txt --seconds 300 \
        --nanogpt PATH/TO/nanoGPT --nanogpt-python PATH/TO/python-with-numpy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from chargpt_tui.bench.harness import cpu_name
from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.data import get_batch

EVAL_BATCHES, EVAL_BATCH_SIZE, EVAL_SEED = 400, 12, 1
NANOGPT_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                  "--eval_iters=20", "--log_interval=10", "--block_size=64", "--batch_size=12",
                  "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0"]
# Evaluates a nanoGPT checkpoint with nanoGPT's own model code, on the batches ours uses.
NANOGPT_EVAL = """
import json, sys, numpy as np, torch
from model import GPT, GPTConfig
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
model = GPT(GPTConfig(**ckpt["model_args"]))
model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
model.eval()
val = np.fromfile("data/shakespeare_char/val.bin", dtype=np.uint16).astype(np.int64)
val = torch.from_numpy(val)
block, gen = ckpt["model_args"]["block_size"], torch.Generator().manual_seed(SEED)
losses = []
with torch.no_grad():
    for _ in range(BATCHES):
        ix = torch.randint(len(val) - block, (BATCH_SIZE,), generator=gen)
        x = torch.stack([val[i:i + block] for i in ix])
        y = torch.stack([val[i + 1:i + 1 + block] for i in ix])
        losses.append(model(x, y)[1].item())
print(json.dumps({"val": sum(losses) / len(losses), "iter": ckpt["iter_num"]}))
""".replace("SEED", str(EVAL_SEED)).replace("BATCHES", str(EVAL_BATCHES)).replace(
    "BATCH_SIZE", str(EVAL_BATCH_SIZE))


def careful_val(checkpoint: Path, corpus: Path) -> float:
    """Our model's val loss on the fixed batches (the 90/10 split of the corpus)."""
    sampled = load_for_sampling(checkpoint, device="cpu")
    model, tokenizer = sampled.model, sampled.tokenizer
    text = corpus.read_text(encoding="utf-8")
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    val = ids[int(0.9 * len(ids)):]
    generator = torch.Generator().manual_seed(EVAL_SEED)
    losses = []
    with torch.no_grad():
        for _ in range(EVAL_BATCHES):
            x, y = get_batch(val, model.config.block_size, EVAL_BATCH_SIZE, generator)
            losses.append(model(x, y)[1].item())
    return sum(losses) / len(losses)


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "chargpt_tui", "train", "--preset", args.preset,
                   "--time-budget", f"{args.seconds:g}s", "--data", str(args.data), "--out",
                   f"{out}/run", "--json", *args.ours_option]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        wall = time.monotonic() - started
        result = json.loads(done.stdout.strip().splitlines()[-1])
        final = careful_val(Path(out) / "run" / "ckpt.pt", args.data)
        best = careful_val(Path(out) / "run" / "best.pt", args.data)
    return {"who": "chargpt-tui", "command": " ".join(command[1:]), "wall_s": round(wall, 1),
            "steps": result["step"], "tokens_per_s": round(result["tokens_per_second"]),
            "val_run_estimate": result["val_loss"], "best_step": result.get("best_step"),
            "val_final_400": round(final, 4), "val_best_400": round(best, 4)}


def nanogpt(args: argparse.Namespace, out: str, *extra: str) -> tuple[float, str]:
    command = [str(args.nanogpt_python), "train.py", *NANOGPT_RECIPE, f"--out_dir={out}", *extra]
    started = time.monotonic()
    done = subprocess.run(command, cwd=args.nanogpt, capture_output=True, text=True, check=True)
    return time.monotonic() - started, done.stdout


def run_nanogpt(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as out:
        # calibrate: 40 iterations, timed from the log's per-iteration times
        _, log = nanogpt(args, out, "--max_iters=40", "--lr_decay_iters=40", "--eval_interval=1000")
        times = [float(t) for t in re.findall(r"time ([\d.]+)ms", log)][2:]
        per_iter = sorted(times)[len(times) // 2] / 1000
        # 20-batch evals every 250 iterations and start-up: leave them 8% of the budget
        iters = max(100, int(0.92 * args.seconds / per_iter))
        wall, log = nanogpt(args, out, f"--max_iters={iters}", f"--lr_decay_iters={iters}")
        evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", log)
        done = subprocess.run([str(args.nanogpt_python), "-c", NANOGPT_EVAL,
                               os.path.join(out, "ckpt.pt")], cwd=args.nanogpt,
                              capture_output=True, text=True, check=True)
        careful = json.loads(done.stdout.strip().splitlines()[-1])  # nanoGPT prints too
    return {"who": "nanoGPT", "command": "train.py " + " ".join(NANOGPT_RECIPE)
            + f" --max_iters={iters} --lr_decay_iters={iters}", "wall_s": round(wall, 1),
            "steps": iters, "tokens_per_s": round(12 * 64 / per_iter),
            "val_run_estimate": float(evals[-1][2]) if evals else None,
            "best_step": careful["iter"], "val_final_400": round(careful["val"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="Tiny Shakespeare")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--ours-option", action="append", default=[],
                        help="an extra option for our train command (repeatable)")
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout (skip it if absent)")
    parser.add_argument("--nanogpt-python", type=Path, default=Path(sys.executable))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--skip-ours", action="store_true", help="run nanoGPT alone")
    args = parser.parse_args()
    print(json.dumps({"torch": torch.__version__, "seconds": args.seconds,
                      "cpu": cpu_name(), "cores": os.cpu_count()}), flush=True)
    for _ in range(args.rounds):
        if not args.skip_ours:
            print(json.dumps(run_ours(args)), flush=True)
        if args.nanogpt:
            print(json.dumps(run_nanogpt(args)), flush=True)


if __name__ == "__main__":
    main()
