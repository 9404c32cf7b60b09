"""How long a prompt waits for training, and what letting it in costs training.

    python benchmarks/prompt_cut_in.py [--preset cpu] [--steps 10] [--rounds 3] [--holds 30]

The app's trainer parks between any two blocks of a step, forward or backward, when a prompt
holds training (``train.park_between_blocks``); headless training takes no such look. This runs
one trainer on a thread, as the app does, and measures in one process:

- training speed with the looks against without them, alternated round by round (the app's
  goal: ≥ 0.95× headless outside prompts);
- how long a hold asked for at a random moment of a step waits until training parks (the
  issue's goal: ≤ 1/4 of a step), against how long the whole step takes.

Appends one JSON line to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from pathlib import Path

import torch

from chargpt_tui.bench.harness import cpu_name
from chargpt_tui.control import HOLD_WAIT_SECONDS
from chargpt_tui.device import machine_load
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.train import Trainer, park_between_blocks


def timed_steps(trainer: Trainer, steps: int) -> float:
    """Seconds a step, over ``steps`` steps."""
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - started) / steps


def waits_for_holds(trainer: Trainer, holds: int, step_seconds: float, seed: int = 0
                    ) -> list[float]:
    """Seconds each of ``holds`` holds waited for training to park, each asked for at a random
    moment while the trainer steps on a thread of its own."""
    stop = threading.Event()

    def train() -> None:
        hooks = park_between_blocks(trainer.model, trainer.control)  # on the stepping thread
        try:
            while not stop.is_set():
                if trainer.control.wait_until_runnable(lambda state: None):
                    trainer.train_step()
        finally:
            for hook in hooks:
                hook.remove()

    thread = threading.Thread(target=train, name="prompt-cut-in-training")
    thread.start()
    rng, waits = random.Random(seed), []
    try:
        time.sleep(2 * step_seconds)
        for _ in range(holds):
            time.sleep(step_seconds * rng.uniform(1.0, 2.0))  # land anywhere inside a step
            asked = time.perf_counter()
            with trainer.control.hold(wait=HOLD_WAIT_SECONDS):
                waits.append(time.perf_counter() - asked)
    finally:
        stop.set()
        thread.join()
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--holds", type=int, default=30, help="holds asked for while training")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", default=os.environ.get("CHARGPT_TUI_DATA", "shakespeare"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results"
                        / "prompt_cut_in.jsonl")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = prepare_run(data=args.data, preset=args.preset, device="cpu",
                        out=Path("/tmp/prompt-cut-in-bench-unused"),
                        overrides={"max_iters": 10**6, "time_budget": None})
    trainer = Trainer(setup)
    load_before = machine_load()[0]
    trainer.train_step()  # warm-up
    step_seconds: dict[str, list[float]] = {"headless": [], "app": []}
    for _ in range(args.rounds):
        step_seconds["headless"].append(timed_steps(trainer, args.steps))
        hooks = park_between_blocks(trainer.model, trainer.control)
        try:
            step_seconds["app"].append(timed_steps(trainer, args.steps))
        finally:
            for hook in hooks:
                hook.remove()
    medians = {name: statistics.median(times) for name, times in step_seconds.items()}
    waits = waits_for_holds(trainer, args.holds, medians["app"])
    wait_median, wait_worst = statistics.median(waits), max(waits)
    row = {"preset": args.preset, "threads": torch.get_num_threads(),
           "step_ms": {name: 1000 * t for name, t in medians.items()},
           "app_speed_vs_headless": medians["headless"] / medians["app"],
           "hold_wait_ms": {"median": 1000 * wait_median, "worst": 1000 * wait_worst,
                            "all": [round(1000 * w, 2) for w in waits]},
           "hold_wait_in_steps": {"median": wait_median / medians["app"],
                                  "worst": wait_worst / medians["app"]},
           "load_average": [load_before, machine_load()[0]], "cores": machine_load()[1],
           "cpu": cpu_name(), "torch": torch.__version__, "steps": args.steps,
           "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with args.out.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
    print(f"step: {1000 * medians['headless']:.1f} ms headless, {1000 * medians['app']:.1f} ms "
          f"with the app's looks between blocks ({row['app_speed_vs_headless']:.3f}× speed)")
    print(f"a hold waited {1000 * wait_median:.1f} ms median, {1000 * wait_worst:.1f} ms worst "
          f"({wait_median / medians['app']:.2f} / {wait_worst / medians['app']:.2f} of a step) "
          f"over {len(waits)} holds")
    print(f"{args.preset} preset, {row['threads']} thread(s), load {load_before:.1f}"
          f"→{row['load_average'][1]:.1f} on {row['cores']} cores, {row['cpu']}")


if __name__ == "__main__":
    main()
