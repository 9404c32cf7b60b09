"""Soak: the app trains while prompts are submitted and cancelled over and over.

Bounded by rounds and by a time budget, so it stays well under a minute on 2 shared cores. It
looks for what only repetition shows: an exception in a worker, a generation that never ends,
training left parked by a cancelled prompt, memory that keeps growing, threads left behind.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widget import Widget
from textual.worker import Worker, WorkerState
from tui_support import press_quickly, tiny_factory, wait_until, write_data

from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.sources import Source, TrainNew
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.prompt_input import PromptInput
from chargpt_tui.tui.widgets.transcript import MAX_ENTRIES, TranscriptEntry

pytestmark = pytest.mark.slow  # tens of seconds by design

SIZE = (100, 30)
ROUNDS = 48
SOAK_SECONDS = 25.0  # stop early (after at least MIN_ROUNDS) when the box is slow
MIN_ROUNDS = 16
WARMUP_ROUNDS = 8  # caches, lazy imports and torch's allocator settle in these
# Generous on purpose: RSS moves by tens of MB with the allocator, torch's pools and Textual's
# render caches, none of which is a leak. What this catches is growth per round — a snapshot,
# a model copy or a queue of text kept for every prompt — which over these rounds (prompts of
# hundreds of characters, beams, attention maps) adds up past this bound.
RSS_GROWTH_LIMIT = 150 * 1024 * 1024
THREAD_EXIT_SECONDS = 10.0
# Removed widgets still alive after a garbage collection (a toast fading out, a footer key
# between two refreshes). Textual's Footer used to keep ~20 a round: hundreds here.
DETACHED_WIDGET_LIMIT = 40


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class SoakApp(ChargptApp):
    """The real app, recording every worker that ends in an error."""

    def __init__(self, source: Source, device: str) -> None:
        super().__init__(source, device=device)
        self.failed_workers: list[str] = []

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.failed_workers.append(f"{event.worker.description}: {event.worker.error!r}")


def last_entry(app: ChargptApp) -> TranscriptEntry:
    return app.query(TranscriptEntry).last()


def finished(entry: TranscriptEntry) -> bool:
    return " chars" in entry.status or "stopped" in entry.status


async def submit(pilot: Pilot, text: str) -> TranscriptEntry:
    pilot.app.query_one(PromptInput).value = text
    await press_quickly(pilot, "enter", "\r")
    await wait_until(pilot, lambda: last_entry(pilot.app).prompt == text,
                     what=f"the prompt {text!r} in the transcript")
    return last_entry(pilot.app)


def pattern_of(round_number: int) -> str:
    return ("escape", "replace", "complete")[round_number // 2 % 3]


async def soak_round(pilot: Pilot, number: int) -> None:
    """Each pattern in both modes: stop mid-stream, replace a running prompt by a new one, let
    one run to the end."""
    app = pilot.app
    assert isinstance(app, ChargptApp)
    mode = "beam" if number % 2 else "sample"
    pattern = pattern_of(number)
    length = 30 if pattern == "complete" else 400
    app.prompt.settings = replace(app.prompt.settings, mode=mode, length=length, seed=number,
                                  beam_width=3)
    entry = await submit(pilot, f"ROMEO {number}:")
    if pattern == "escape":
        await wait_until(pilot, lambda: len(entry.answer + entry.tentative) > 3 or finished(entry),
                         what=f"round {number} streaming")
        await press_quickly(pilot, "escape", "\x1b")
    elif pattern == "replace":
        await wait_until(pilot, lambda: "generating" in entry.status or finished(entry),
                         what=f"round {number} started")
        app.prompt.settings = replace(app.prompt.settings, length=20)
        replacement = await submit(pilot, f"KING {number}:")
        await wait_until(pilot, lambda: finished(replacement), what=f"round {number} replaced")
    await wait_until(pilot, lambda: finished(entry), what=f"round {number} to end")


async def soak(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    app = SoakApp(TrainNew(tiny_factory(data, tmp_path / "run", eval_interval=25)),
                  device="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.training.stats.step >= 5, what="training")
        deadline = time.monotonic() + SOAK_SECONDS
        rss_after_warmup = 0
        rounds = 0
        while rounds < ROUNDS and (rounds < MIN_ROUNDS or time.monotonic() < deadline):
            await soak_round(pilot, rounds)
            rounds += 1
            if rounds == WARMUP_ROUNDS:
                gc.collect()
                rss_after_warmup = rss_bytes()
        gc.collect()
        growth = rss_bytes() - rss_after_warmup
        detached = [type(node).__name__ for node in gc.get_objects()
                    if issubclass(type(node), Widget) and not node.is_attached]

        await wait_until(pilot, lambda: not app.prompt.generating, what="no generation left")
        assert app.is_running
        assert app.failed_workers == []
        log = app.query_one(EventLog).entries
        assert not [line for line in log if line.startswith("error:")], log
        entries = app.query(TranscriptEntry)
        prompts = rounds + sum(pattern_of(n) == "replace" for n in range(rounds))
        assert len(entries) == min(prompts, MAX_ENTRIES)
        assert all(finished(entry) for entry in entries)
        statuses = [entry.status for entry in entries]
        assert any("stopped" in status for status in statuses), statuses
        assert any("stopped" not in status for status in statuses), statuses
        # No prompt left training parked: it still advances.
        step = app.training.stats.step
        await wait_until(pilot, lambda: app.training.stats.step > step + 5, what="training")
        assert app.training.stats.state in ("training", "evaluating")  # not parked, not paused
        print(f"soak: {rounds} rounds, RSS grew {growth / 2**20:.1f} MB after warm-up")
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MB in {rounds} rounds"
        assert len(detached) < DETACHED_WIDGET_LIMIT, Counter(detached).most_common(5)

        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code == 0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_prompting_while_training_leaks_nothing(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(tmp_path / "cache"))
    threads_before = set(threading.enumerate())
    # Outside the app's event loop, so that loop's thread pool is shut down before we count.
    asyncio.run(soak(tmp_path))
    deadline = time.monotonic() + THREAD_EXIT_SECONDS
    while (left := set(threading.enumerate()) - threads_before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"threads still running after quitting: {sorted(t.name for t in left)}"
