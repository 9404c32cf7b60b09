"""How should the TUI share the CPU between training and answering a prompt?

Measures, in one run on the ``cpu`` preset shape (4×128, block 64), the ratios that decided
the design:

* sampling speed (chars/s) alone, while training runs beside it, and with training parked
  by ``TrainerControl.hold`` (what the TUI does);
* the same with torch limited to 1 intra-op thread (``torch.set_num_threads`` is process-wide,
  so both threads share the setting);
* training speed (steps/s) alone and while a prompt is being answered beside it.

Run: ``python benchmarks/sampling_while_training.py`` (about a minute). Ratios, not absolute
numbers, are what transfer between machines; on a shared box expect noise.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import torch

from chargpt_tui.events import EventBus, StepDone
from chargpt_tui.run_setup import prepare_run
from chargpt_tui.sampling import SamplingParams, stream_tokens
from chargpt_tui.train import Trainer

SAMPLE_CHARS = 400
WINDOW = 4.0  # seconds per training-speed measurement


def make_text() -> str:
    words = ("the", "king", "queen", "lord", "my", "thy", "thou", "art", "love", "death",
             "night", "day", "sweet", "heart", "good", "shall", "will", "come", "go", "speak")
    lines = []
    for i in range(4000):
        lines.append(f"{('ROMEO', 'JULIET', 'KING')[i % 3]}:")
        lines.append(" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(8)) + ".")
    return "\n".join(lines)


def chars_per_second(trainer: Trainer) -> float:
    model, _ = trainer.snapshot()
    params = SamplingParams(max_new_tokens=SAMPLE_CHARS, temperature=0.8, seed=0)
    started = time.perf_counter()
    count = sum(1 for _ in stream_tokens(model, [0], params))
    return count / (time.perf_counter() - started)


def steps_per_second(steps: list[float], window: float) -> float:
    end = time.perf_counter()
    return sum(1 for t in steps if end - window <= t <= end) / window


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    data = folder / "text.txt"
    data.write_text(make_text(), encoding="utf-8")
    setup = prepare_run(data=str(data), preset="cpu", out=folder / "run", device="cpu",
                        overrides={"max_iters": 10**7, "eval_interval": 10**7})
    bus = EventBus()
    step_times: list[float] = []
    bus.subscribe(lambda e: step_times.append(time.perf_counter())
                  if isinstance(e, StepDone) else None)
    trainer = Trainer(setup, bus)
    trainer.control.pause()
    worker = threading.Thread(target=trainer.run, daemon=True)
    worker.start()
    time.sleep(1.0)  # let the first evaluation finish
    chars_per_second(trainer)  # warm-up: first-call allocations would count against "alone"

    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        trainer.control.pause()
        time.sleep(0.3)
        alone = chars_per_second(trainer)
        trainer.control.resume()
        time.sleep(WINDOW)
        train_alone = steps_per_second(step_times, WINDOW)
        started = time.perf_counter()
        beside = chars_per_second(trainer)
        window = time.perf_counter() - started
        train_beside = steps_per_second(step_times, window)
        with trainer.control.hold(wait=2.0):
            held = chars_per_second(trainer)
        print(f"torch threads {threads}: sampling alone {alone:7.0f} chars/s · beside training "
              f"{beside:7.0f} ({beside / alone:.2f}×) · training held {held:7.0f} "
              f"({held / alone:.2f}×)")
        print(f"                 training alone {train_alone:5.1f} steps/s · while sampling "
              f"beside it {train_beside:5.1f} ({train_beside / max(train_alone, 1e-9):.2f}×)")
    trainer.control.stop()
    worker.join(timeout=30)


if __name__ == "__main__":
    main()
