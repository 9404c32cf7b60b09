"""A real terminal for driving ``chargpt-tui`` as a user would: a tmux server of our own.

Used by the end-to-end tests (tests/tui/test_tmux.py) and by ``app_at_gpu_pace.py``. tmux must be
installed; each instance talks to its own server socket, so nothing touches the user's tmux.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class Tmux:
    """One tmux server (``socket``) holding one window named ``app``."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True,
                              text=True, timeout=10, check=True)
        return done.stdout

    def start(self, command: str, width: int, height: int) -> None:
        """Run ``command`` (a shell line) in a new ``width``×``height`` window, ignoring the
        user's tmux configuration. COLUMNS and LINES are unset first: under pytest the pane's
        shell got COLUMNS=80 LINES=24, and an app believes them over the terminal's own size."""
        self("-f", "/dev/null", "new-session", "-d", "-s", "app", "-x", str(width), "-y",
             str(height), f"unset COLUMNS LINES; {command}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True,
                       timeout=10)

    def keys(self, *keys: str, literal: bool = False) -> None:
        """Send key names (``C-t``, ``Enter``), or text typed as is with ``literal``."""
        self("send-keys", "-t", "app", *(["-l"] if literal else []), *keys)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app")

    def wait_for(self, predicate: Callable[[str], object], what: str, timeout: float = 60.0,
                 poll: float = 0.2) -> str:
        """The first screen ``predicate`` accepts; AssertionError with the screen after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen was:\n{screen}")
            time.sleep(poll)

    def wait_for_exit(self, status_file: Path, timeout: float = 60.0) -> int:
        """The app's exit status, as the shell around it wrote it. (Reading tmux's
        pane_dead_status instead was flaky under load: tmux sometimes left the exited app a
        zombie for many seconds before it learned the status.)"""
        deadline = time.monotonic() + timeout
        while not status_file.exists() or not status_file.read_text().strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"the app did not exit; screen was:\n{self.screen()}")
            time.sleep(0.2)
        return int(status_file.read_text())

    def app_pid(self) -> int:
        """The app's process: the only child of the pane's shell."""
        shell = self("display-message", "-p", "-t", "app", "#{pane_pid}").strip()
        found = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True,
                               timeout=10).stdout.split()
        assert len(found) == 1, f"expected one app process under the shell, found {found}"
        return int(found[0])
