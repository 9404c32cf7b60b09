"""Steering a running training loop from other threads: pause, resume, hold, save, stop.

The UI thread, a signal handler or a prompt worker call in; the loop itself answers at step
boundaries only, so a checkpoint always holds a consistent model/optimizer pair.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator

# How long a prompt waits for training to park (at its next block, or the step's end) before it
# samples anyway: shared by the app and the bench, so the bench measures what the app does.
HOLD_WAIT_SECONDS = 2.0


class TrainerControl:
    """Thread-safe steering of a running :class:`Trainer`; every call returns at once.

    Two kinds of pause: the user's (``pause``/``resume``, shown as "paused") and short *holds*
    that other work takes (``with control.hold(): ...``) — e.g. the TUI answering a prompt, so
    the two computations don't fight over the CPU cores. Training runs only when neither applies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = threading.Event()  # set ⇔ the loop may take steps
        self._running.set()
        self._parked = threading.Event()  # set ⇔ the loop is not inside a step
        self._parked.set()
        self._stop = threading.Event()
        self._save = threading.Event()
        self._user_paused = False
        self._holds = 0
        self._no_holds = threading.Event()  # set ⇔ nobody holds training
        self._no_holds.set()
        self.stop_reason = ""
        self.exit_code = 0
        # Timing hook for the bench: when a list, every hold appends its [start, end] span
        # (end is inf while the hold lasts, so a running hold already counts).
        self.hold_spans: list[list[float]] | None = None
        self._parked_in_work = 0.0  # seconds let_holds_run parked (the loop's thread only)
        self.clock: Callable[[], float] = time.monotonic  # what they are measured by

    def _update(self) -> None:
        with self._lock:
            if self._stop.is_set() or (not self._user_paused and self._holds == 0):
                self._running.set()
            else:
                self._running.clear()
            if self._holds == 0:
                self._no_holds.set()
            else:
                self._no_holds.clear()

    def pause(self) -> None:
        self._user_paused = True
        self._update()

    def resume(self) -> None:
        self._user_paused = False
        self._update()

    def toggle_pause(self) -> bool:
        """Pause if running, resume if paused; returns True when now paused."""
        if self._user_paused:
            self.resume()
        else:
            self.pause()
        return self._user_paused

    @property
    def paused(self) -> bool:
        return self._user_paused

    @contextlib.contextmanager
    def hold(self, wait: float = 0.0) -> Iterator[None]:
        """Keep training parked while the block runs; waits up to ``wait`` s for the current
        step to finish first. Holds nest and never show up as a user pause."""
        span = [time.perf_counter(), math.inf]
        if self.hold_spans is not None:
            self.hold_spans.append(span)
        with self._lock:
            self._holds += 1
        self._update()
        try:
            if wait:
                self._parked.wait(wait)
            yield
        finally:
            with self._lock:
                self._holds -= 1
            self._update()
            span[1] = time.perf_counter()

    def request_save(self) -> None:
        self._save.set()
        self._running.set()  # wake a paused loop so it saves now; it parks again after

    # -- the training loop's side (called from the training thread only) ------------------------

    def take_save_request(self) -> bool:
        """True once per :meth:`request_save`."""
        requested = self._save.is_set()
        if requested:
            self._save.clear()
        return requested

    def rearm(self) -> None:
        """After a save that woke a paused or held loop: make it park again."""
        self._update()

    def wait_until_runnable(self, on_state: Callable[[str], None]) -> bool:
        """At a step boundary: park while paused or held, without busy-waiting.

        Returns False when the loop should re-check stop/save requests before stepping.
        ``on_state`` hears "paused"/"training" around a user pause (holds stay silent).
        """
        if not self._running.is_set():
            user_pause = self.paused
            if user_pause:
                on_state("paused")
            self._parked.set()
            self._running.wait()
            if self.stopping or self._save.is_set():
                return False
            if user_pause:
                on_state("training")
        self._parked.clear()
        # A hold may have begun while we woke up. Checked only after clearing _parked, so a hold
        # either sees this and parks us first or waits for the step: never both at once.
        return self._running.is_set()

    def let_holds_run(self) -> None:
        """Inside long work that leaves the weights alone (an evaluation, a live sample, the
        blocks of a step before its optimizer step): if someone holds training, park
        here until they are done, as at a step boundary. Without it a prompt typed during an
        evaluation would wait for the whole evaluation."""
        while not self._no_holds.is_set() and not self.stopping:
            parked = self.clock()
            self._parked.set()
            self._no_holds.wait()
            # Cleared before looking again (as in wait_until_runnable): a hold that begins now
            # either sees us parked and is let run by the loop's next look, or waits for us.
            self._parked.clear()
            self._parked_in_work += self.clock() - parked

    @property
    def parked_in_work(self) -> float:
        """Seconds :meth:`let_holds_run` parked since :meth:`take_parked_in_work` last took them."""
        return self._parked_in_work

    def take_parked_in_work(self) -> float:
        """Seconds :meth:`let_holds_run` parked since the last call: not the run's own time (a
        time budget gives them back, as it does a pause)."""
        seconds, self._parked_in_work = self._parked_in_work, 0.0
        return seconds

    def mark_idle(self) -> None:
        """The loop has ended: holds need not wait for a step boundary any more."""
        self._parked.set()

    def stop(self, reason: str = "stopped", exit_code: int = 0) -> None:
        """Finish at the next step boundary (saving a checkpoint). Safe from signal handlers:
        it only sets events, it takes no lock."""
        if not self._stop.is_set():
            self.stop_reason, self.exit_code = reason, exit_code
        self._stop.set()
        self._running.set()  # wake a paused loop so it can stop

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()
