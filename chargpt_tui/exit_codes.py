"""The exit codes every view uses, as a shell reports them (128 + the signal's number).

An interrupted ``train``, ``tui`` or torchrun worker exits with the code of the signal that
stopped it (after saving), so scripts can tell "stopped by Ctrl+C" from "finished".
"""

from __future__ import annotations

import signal

SIGNAL_EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
if hasattr(signal, "SIGHUP"):
    SIGNAL_EXIT_CODES[signal.SIGHUP] = 129
EXIT_OUTPUT_CLOSED = 141  # what a shell reports for a process killed by SIGPIPE (128 + 13)
