"""The fast recipe's ablation: each part's effect on val loss, side by side in one run.

Every variant trains on the same data with the same seed, from the `cpu` preset's shape, for the
same number of tokens (``--tokens``) or the same wall-clock time (``--seconds``, then the
schedule is fitted to the time as ``--time-budget`` does). Val loss is measured on
``--eval-batches`` fixed batches (400 holds ±0.005). One JSON line per variant on stdout.

    python benchmarks/recipe_ablation.py --data ../shared/data/tinyshakespeare.txt \
        --tokens 1536000 --variants lecture fast fast-no-muon ...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import torch

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.presets import RECIPES
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import Trainer, estimate_loss

FAST = RECIPES["fast"]
# Each ablation turns one part of the fast recipe back to the lecture's. (RMSNorm, ReLU², zero
# init and the bigram table were ablated too, then removed: docs/recipe.md keeps their figures.)
ABLATIONS: dict[str, dict[str, Any]] = {
    "no-rope": {"rope": False},
    "no-qk-norm": {"qk_norm": False},
    "no-muon": {"optimizer": "adamw"},
    "no-wsd": {"schedule": "cosine"},
}


def variant_settings(name: str) -> dict[str, Any]:
    """``lecture``, ``fast``, ``fast-<ablation>``, or either with ``+key=value`` overrides."""
    base, *extras = name.split("+")
    if base in RECIPES:
        settings: dict[str, Any] = {"recipe": base}
    elif base.startswith("fast-") and base[5:] in ABLATIONS:
        settings = {"recipe": "fast", **ABLATIONS[base[5:]]}
    else:
        raise SystemExit(f"unknown variant {name!r}")
    for extra in extras:
        key, value = extra.split("=")
        settings[key] = type(FAST.get(key, 0.0))(value) if key in FAST else float(value)
        if key in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "warmup_iters"):
            settings[key] = int(float(value))
    return settings


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = variant_settings(name)
    with tempfile.TemporaryDirectory() as out:
        setup = prepare_run(data=args.data, preset=args.preset, overrides=dict(settings),
                            out=out, device="cpu")
        tokens_per_step = setup.train_config.batch_size * setup.model_config.block_size
        train = setup.train_config
        if args.seconds:
            train.time_budget = args.seconds
            train.max_iters = 10**9
        else:
            train.max_iters = max(1, args.tokens // tokens_per_step)
        train.eval_interval = 10**9  # no evaluations while timing: one careful one at the end
        train.eval_iters = 1
        started = time.monotonic()
        setup.started = started
        trainer = Trainer(setup)
        result = trainer.run()
        wall = time.monotonic() - started
        # the end-of-run weights (not best.pt's), evaluated on many fixed batches
        trainer.model.load_state_dict(load_checkpoint(f"{out}/ckpt.pt")["model"])
        losses = estimate_loss(trainer.model, setup.data, setup.model_config.block_size,
                               train.batch_size, args.eval_batches, setup.device, seed=1,
                               precision=train.precision)
    return {"variant": name, "val": round(losses["val"], 4), "train": round(losses["train"], 4),
            "steps": result.step, "tokens": result.step * tokens_per_step,
            "wall_s": round(wall, 1), "tokens_per_s": round(result.tokens_per_second),
            "parameters": result.parameters, "settings": settings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the corpus (Tiny Shakespeare)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--tokens", type=int, default=1_536_000,
                        help="tokens per variant (default: nanoGPT's CPU recipe, 2000×12×64)")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="a wall-clock budget per variant instead of a token count")
    parser.add_argument("--eval-batches", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=["lecture", "fast",
                                                          *(f"fast-{a}" for a in ABLATIONS)])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "tokens": args.tokens, "seconds": args.seconds}), flush=True)
    for name in args.variants:
        print(json.dumps(run_variant(name, args)), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
