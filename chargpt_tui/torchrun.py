"""What ``torchrun`` tells a process, readable without importing torch (the CLI starts fast).

Also how a torchrun process ends: see :func:`exit_worker`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def exit_code_of(done: SystemExit) -> int:
    """The status Python itself would exit with for ``done`` (a message means 1, printed)."""
    if done.code is None:
        return 0
    if isinstance(done.code, int):
        return done.code
    print(done.code, file=sys.stderr)
    return 1


def exit_worker(done: SystemExit) -> NoReturn:
    """End a torchrun process with ``done``'s status, without the interpreter's shutdown.

    Why: gloo's worker threads drop the tensors of a finished collective a moment *after* the
    collective has returned, and dropping a tensor that Python knew takes the GIL. When that
    moment falls inside the interpreter's shutdown, the thread is killed mid-C++ and the process
    aborts ("terminate called without an active exception", SIGABRT), so torchrun reports a run
    that had finished and saved as failed. That happened about once in 30 two-process runs on a
    busy 2-core machine. By the time this is called every file of ours is closed (the checkpoint
    is written atomically, the metrics file closed by the trainer) and the process group is
    destroyed; only the standard streams need flushing.
    """
    code = exit_code_of(done)
    for stream in (sys.stdout, sys.stderr):
        # closed or gone (a dropped SSH session): nothing left to keep
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
