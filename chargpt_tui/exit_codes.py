"""The exit codes every view uses, as a shell reports them (128 + the signal's number).

An interrupted ``train``, ``tui`` or torchrun worker exits with the code of the signal that
stopped it (after saving), so scripts can tell "stopped by Ctrl+C" from "finished".
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

SIGNAL_EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
if hasattr(signal, "SIGHUP"):
    SIGNAL_EXIT_CODES[signal.SIGHUP] = 129
EXIT_OUTPUT_CLOSED = 141  # what a shell reports for a process killed by SIGPIPE (128 + 13)


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[str, int], None]) -> Iterator[None]:
    """While inside, Ctrl+C, SIGTERM and SIGHUP call ``stop(reason, exit code)``.

    ``stop`` only asks: the work stops at its next step boundary and saves first. Saving inside a
    signal handler could interrupt a half-written optimizer step, and a second Ctrl+C while
    stopping still only waits for that one save.
    """
    def handler(signum: int, _frame: object) -> None:
        stop(f"received {signal.Signals(signum).name}", SIGNAL_EXIT_CODES[signum])

    previous = {sig: signal.signal(sig, handler) for sig in SIGNAL_EXIT_CODES}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
