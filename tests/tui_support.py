"""Shared helpers for the TUI tests: tiny data, tiny runs, and polling with a deadline."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from corpus import write_corpus
from textual import events
from tiny_model import TINY_SHAPE

from chargpt_tui.run_setup import RunSetup, prepare_run

# A model small enough that tens of steps take well under a second on 2 shared cores.
TINY = dict(TINY_SHAPE, n_layer=1, batch_size=4, dropout=0.0, learning_rate=3e-3,
            warmup_iters=2, eval_interval=10, eval_iters=2)


def write_data(folder: Path) -> Path:
    return write_corpus(folder)


def tiny_factory(data: Path, out: Path | str, **overrides: Any
                 ) -> Callable[[Any, Any], RunSetup]:
    """A setup factory for ``ChargptApp``: a tiny model on tiny local data."""
    settings = {**TINY, "max_iters": 100_000, **overrides}

    def factory(progress: Any, notice: Any) -> RunSetup:
        return prepare_run(data=str(data), preset="tiny", overrides=settings, out=out,
                           device="cpu", progress=progress, notice=notice)

    return factory


async def wait_until(pilot: Any, predicate: Callable[[], bool], timeout: float = 20.0,
                     what: str = "condition") -> None:
    """Poll ``predicate`` while letting the app run; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)
    await asyncio.sleep(0)


async def press_quickly(pilot: Any, key: str, char: str | None = None) -> None:
    """Press a key without ``Pilot.press``'s wait for the process to go idle (up to 1 s a
    key, which it never is while a model trains in the process)."""
    pilot.app.post_message(events.Key(key, char))
    await pilot.pause(0.02)


def async_test(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no pytest async plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def train_tiny_checkpoint(folder: Path, max_iters: int = 30, **overrides: Any) -> Path:
    """Train a tiny model headlessly (fixed seed: same weights every time); returns
    ``folder/trained/ckpt.pt``. Paths inside it are relative to ``folder`` (the checkpoint
    records its data path, and snapshots must not show a random temp folder)."""
    from chargpt_tui.train import Trainer

    write_data(folder)
    previous = Path.cwd()
    os.chdir(folder)
    try:
        setup = tiny_factory(Path("play.txt"), "trained", max_iters=max_iters,
                             **overrides)(None, None)
        result = Trainer(setup).run()
    finally:
        os.chdir(previous)
    assert result.checkpoint is not None
    return folder / "trained" / "ckpt.pt"
