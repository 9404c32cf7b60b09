"""Sweeps: a small grid of settings, each point a normal ``chargpt-tui train`` run folder.

``chargpt-tui sweep --learning-rate 1e-3,3e-3 --n-embd 64,128`` trains the four combinations
one after another (on a GPU, ``--parallel N`` at a time), each in its own process under one
sweep folder, and keeps ``sweep.json`` there: every point's settings, outcome and the
leaderboard. A point that fails is recorded and the sweep goes on; :meth:`Sweep.stop` lets the
points in training save and stop, and starts no other.

Each point is exactly the ``train`` command a user would type (its ``command`` is recorded), so
its folder opens in ``runs``, ``sample``, ``explain`` and ``--compare`` like any other.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chargpt_tui.errors import ConfigError
from chargpt_tui.ladder import LADDER_NAME, write_json_atomically
from chargpt_tui.run_setup import default_out_dir
from chargpt_tui.runs import METRICS_NAME

SWEEP_NAME = "sweep.json"
# option → (short name in point folders, the type its values must parse as)
AXES: dict[str, tuple[str, type]] = {
    "learning_rate": ("lr", float),
    "batch_size": ("batch", int),
    "n_embd": ("embd", int),
    "n_layer": ("layers", int),
    "block_size": ("block", int),
    "dropout": ("dropout", float),
}


def parse_axis(option: str, text: str) -> list[str]:
    """``"1e-3, 3e-3"`` → ``["1e-3", "3e-3"]``, each checked to parse as the option's type."""
    _, kind = AXES[option]
    values = [part.strip() for part in text.split(",") if part.strip()]
    flag = "--" + option.replace("_", "-")
    if not values:
        raise ConfigError(f"{flag} has no values", f"give a comma list, e.g. {flag} 1e-3,3e-3")
    for value in values:
        try:
            kind(value)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise ConfigError(f"{flag}: {value!r} is not {expected}",
                              f"give a comma list, e.g. {flag} 1e-3,3e-3") from None
    if len(set(values)) != len(values):
        raise ConfigError(f"{flag} lists a value twice: {text}")
    return values


def expand_grid(axes: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination, the first axis varying slowest (``itertools.product`` order)."""
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]


def point_name(settings: dict[str, str], varying: set[str] | None = None) -> str:
    """``{"learning_rate": "1e-3", "n_embd": "64"}`` → ``lr=1e-3_embd=64`` (a folder name);
    only the ``varying`` settings, when given (a one-value list is the same at every point)."""
    shown = {k: v for k, v in settings.items() if varying is None or k in varying}
    return "_".join(f"{AXES[k][0]}={v}" for k, v in shown.items()) or "point"


@dataclass
class SweepPoint:
    name: str
    settings: dict[str, str]
    run_dir: str
    command: list[str] = field(default_factory=list)
    state: str = "pending"  # pending, training, finished, stopped, failed
    best_val_loss: float | None = None
    best_step: int | None = None
    step: int | None = None
    tokens_per_second: float | None = None
    parameters: int | None = None
    seconds: float | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def last_error_line(stderr: str) -> str:
    """The one-line error a failed ``train`` printed (``error: ...``), or its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    line = (errors or lines or ["(no output)"])[-1]
    return line.removeprefix("error:").strip()


class Sweep:
    """The grid's points as ``train`` processes, ``parallel`` at a time."""

    def __init__(self, axes: dict[str, list[str]], train_args: list[str], *,
                 out_dir: Path | None = None, parallel: int = 1,
                 python: str = sys.executable) -> None:
        if parallel < 1:
            raise ConfigError("--parallel must be at least 1")
        if not axes:
            raise ConfigError("nothing to sweep",
                              "give at least one comma list, e.g. --learning-rate 1e-3,3e-3")
        self.axes, self.train_args, self.parallel = axes, train_args, parallel
        self.out_dir = out_dir or default_sweep_dir()
        self.points = []
        varying = {name for name, values in axes.items() if len(values) > 1}
        for settings in expand_grid(axes):
            name = point_name(settings, varying)
            run_dir = self.out_dir / name
            options = [arg for key, value in settings.items()
                       for arg in ("--" + key.replace("_", "-"), value)]
            command = [python, "-m", "chargpt_tui", "train", "--json", "--out", str(run_dir),
                       *train_args, *options]
            self.points.append(SweepPoint(name, settings, str(run_dir), command))
        self.stopped: dict[str, Any] | None = None
        self._stop_request: tuple[str, int] | None = None
        self._running: dict[int, tuple[subprocess.Popen[str], float]] = {}
        self._interrupted: set[int] = set()  # points that were running when stop() came

    def stop(self, reason: str, exit_code: int) -> None:
        """Let the points in training save and stop; start no other."""
        self._stop_request = (reason, exit_code)
        for index, (process, _) in list(self._running.items()):
            if process.poll() is None:
                self._interrupted.add(index)
                process.send_signal(signal.SIGINT)

    @property
    def exit_code(self) -> int:
        return self._stop_request[1] if self._stop_request else 0

    def run(self, on_change: Callable[[SweepPoint], None]) -> list[SweepPoint]:
        """Train every point; ``on_change`` hears of each start and end."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        waiting = list(range(len(self.points)))
        while waiting or self._running:
            while waiting and len(self._running) < self.parallel and not self._stop_request:
                index = waiting.pop(0)
                self._start(index)
                on_change(self.points[index])
            if self._stop_request and waiting and self.stopped is None:
                self.stopped = {"reason": self._stop_request[0],
                                "not_started": [self.points[i].name for i in waiting]}
                waiting = []
            for index in self._finished_indexes():
                self._write()
                on_change(self.points[index])
            time.sleep(0.05)
        self._write()
        return self.points

    def _start(self, index: int) -> None:
        point = self.points[index]
        point.state = "training"
        # Its own session: a Ctrl+C in the terminal reaches this process only, which passes it
        # on (stop), so every point stops the same way whether the signal came from a terminal
        # or from `kill -INT`.
        process = subprocess.Popen(point.command, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._running[index] = (process, time.monotonic())
        self._write()

    def _finished_indexes(self) -> list[int]:
        done = []
        for index, (process, started) in list(self._running.items()):
            if process.poll() is None:
                continue
            stdout, stderr = process.communicate()
            del self._running[index]
            self._record(self.points[index], process.returncode, stdout, stderr,
                         time.monotonic() - started)
            point = self.points[index]
            if index in self._interrupted and point.state == "failed" and point.step is None:
                point.state, point.error = "stopped", ""  # interrupted before it trained
            done.append(index)
        return done

    @staticmethod
    def _record(point: SweepPoint, code: int, stdout: str, stderr: str, seconds: float
                ) -> None:
        point.seconds = seconds
        try:
            result = json.loads(stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            result = None
        if isinstance(result, dict):
            point.state = str(result.get("state", "failed"))
            point.best_val_loss = result.get("best_val_loss")
            point.best_step = result.get("best_step")
            point.step = result.get("step")
            point.tokens_per_second = result.get("tokens_per_second")
            point.parameters = result.get("parameters")
            point.error = result.get("reason", "") if point.state == "failed" else ""
        else:  # it never trained: bad settings, data, memory...
            point.state = "failed"
            point.error = last_error_line(stderr) or f"exit code {code}"

    def leaderboard(self) -> list[SweepPoint]:
        """Points with a validation loss, best first."""
        scored = [p for p in self.points if p.best_val_loss is not None]
        return sorted(scored, key=lambda p: p.best_val_loss or 0.0)

    def record(self) -> dict[str, Any]:
        return {"axes": self.axes, "train_args": self.train_args, "parallel": self.parallel,
                "points": [p.to_dict() for p in self.points],
                "leaderboard": [p.name for p in self.leaderboard()], "stopped": self.stopped,
                "out_dir": str(self.out_dir)}

    def _write(self) -> None:
        write_json_atomically(self.record(), self.out_dir / SWEEP_NAME)


def default_sweep_dir(runs_root: Path = Path("runs")) -> Path:
    fresh = default_out_dir(runs_root)
    return fresh.with_name(f"sweep-{fresh.name}")


def compared_runs(paths: list[Path]) -> list[Path]:
    """``--compare``'s folders, a sweep folder (``sweep.json``) or a lecture ladder's
    (``ladder.json``) standing for its runs that have a training log, in their order."""
    runs: list[Path] = []
    for path in paths:
        index = next((path / name for name in (SWEEP_NAME, LADDER_NAME)
                      if (path / name).is_file()), None)
        if index is None:
            runs.append(path)
            continue
        try:
            record = json.loads(index.read_text(encoding="utf-8"))
            folders = [Path(p["run_dir"]) for p in record.get("points", record.get("rungs"))]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"cannot read {index}: {error}") from None
        logged = [folder for folder in folders if (folder / METRICS_NAME).is_file()]
        if not logged:
            raise ConfigError(f"{path} holds no run with a training log yet",
                              "compare it once its first run has started")
        runs += logged
    return runs
