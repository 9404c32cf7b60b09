"""Past and running runs, read back from their folders.

Every run folder holds ``metrics.jsonl``: one JSON object per training event (everything but the
live sample text), written by :class:`MetricsWriter`. That file is enough to
list runs (:func:`list_runs`) and to replay or follow a run's panels from another process
(:func:`follow_metrics`), without loading any checkpoint. A run with only a ``ckpt.pt`` (no
metrics) is still listed, from a memory-mapped load that reads no weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from chargpt_tui.errors import UserError
from chargpt_tui.events import (
    CheckpointSaved,
    EvalDone,
    EvalProgress,
    Event,
    Notice,
    SampleChunk,
    StateChanged,
    StepDone,
    TrainingStarted,
)
from chargpt_tui.presets import recipe_of

# What a run folder holds. Named here, not in checkpoint.py, so listing runs never imports torch.
METRICS_NAME = "metrics.jsonl"  # what MetricsWriter writes in every run folder
CHECKPOINT_NAME = "ckpt.pt"  # the latest state: weights, optimizer, RNG — what --resume uses
BEST_NAME = "best.pt"  # weights with the lowest validation loss so far — what sampling prefers
EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in (
    TrainingStarted, StepDone, EvalProgress, EvalDone, CheckpointSaved, SampleChunk, StateChanged,
    Notice)}
# Metrics are read backwards in blocks of this size; one block (~1000 steps) usually suffices.
BLOCK_BYTES = 256 * 1024


def point_latest_at(out_dir: Path) -> None:
    """Keep ``<runs root>/latest`` a symlink to the newest run (best effort: not on all OSes)."""
    latest = out_dir.parent / "latest"
    if out_dir.name == "latest" or (latest.exists() and not latest.is_symlink()):
        return
    tmp = out_dir.parent / f".latest.{os.getpid()}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(out_dir.name, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError:
        tmp.unlink(missing_ok=True)


class MetricsWriter:
    """Appends every event of a run as one JSON line to ``metrics.jsonl`` beside the checkpoint.

    Flushed at most once a second (and on evals and checkpoints), so it costs training nothing.
    Live samples arrive a character at a time; each is written once, whole, when it ends. The
    file is enough to replay a run's panels (see :mod:`chargpt_tui.runs`).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._last_flush = 0.0
        self.failed = False
        self._sample: list[str] = []

    def __call__(self, event: Any) -> None:
        if self.failed:
            return
        if isinstance(event, SampleChunk):
            self._sample.append(event.text)
            if not event.final:
                return
            event = SampleChunk(event.step, "".join(self._sample), final=True)
            self._sample = []
        record = {"event": type(event).__name__, "time": time.time(), **asdict(event)}
        try:
            self._file.write(json.dumps(record) + "\n")
            now = time.monotonic()
            if now - self._last_flush > 1.0 or not isinstance(event, StepDone):
                self._file.flush()
                self._last_flush = now
        except OSError:
            # A log that cannot be written (full disk) must not crash the run it describes;
            # the next checkpoint save reports the disk problem if it persists.
            self.failed = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def event_from_json(line: str | bytes) -> Event | None:
    """One ``metrics.jsonl`` line back as its event dataclass; None for anything unreadable
    (a half-written last line after a crash, an event type from a newer version)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    cls = EVENT_TYPES.get(record.get("event", ""))
    if cls is None:
        return None
    try:
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})
    except TypeError:  # a required field is missing
        return None


def read_metrics(path: str | os.PathLike[str]) -> list[Event]:
    """All events in a metrics file, as it is now."""
    with open(path, "rb") as handle:
        return _parse_lines(handle.read().split(b"\n"))


def loss_history(path: str | os.PathLike[str], up_to_step: int
                 ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Train and val losses a run logged up to ``up_to_step`` (later steps belong to weights
    other than the checkpoint being shown). Best effort: a missing file or torn lines give less."""
    try:
        events = read_metrics(path)
    except OSError:
        return [], []
    train = [(e.step, e.loss) for e in events if isinstance(e, StepDone) and e.step <= up_to_step]
    val = [(e.step, e.val_loss) for e in events
           if isinstance(e, EvalDone) and e.step <= up_to_step]
    return train, val


def _parse_lines(lines: Iterable[bytes]) -> list[Event]:
    return [event for line in lines if line.strip()
            if (event := event_from_json(line)) is not None]


def follow_metrics(path: str | os.PathLike[str], stop_event: threading.Event,
                   poll_interval: float = 0.25) -> Iterator[Event]:
    """Yield a run's events from the start of ``metrics.jsonl``, then each one appended later,
    like ``tail -f``, until ``stop_event`` is set. ``path`` is the file or its run folder.

    Waits for the file if the run has not started yet, and starts over if the file is replaced
    or truncated. Only complete lines are parsed: the writer may be mid-line at any moment.
    Meant for a worker thread; set ``stop_event`` to end it within ``poll_interval`` seconds.
    """
    path = Path(path)
    if path.suffix != ".jsonl":
        path = path / METRICS_NAME
    handle = None
    pending = b""
    try:
        while not stop_event.is_set():
            if handle is None:
                try:
                    handle = path.open("rb")
                except FileNotFoundError:
                    stop_event.wait(poll_interval)
                    continue
                pending = b""
            chunk = handle.read()
            if chunk:
                *lines, pending = (pending + chunk).split(b"\n")
                yield from _parse_lines(lines)
                continue
            if _replaced_or_truncated(path, handle):
                handle.close()
                handle = None
                continue
            stop_event.wait(poll_interval)
    finally:
        if handle is not None:
            handle.close()


def _replaced_or_truncated(path: Path, handle: Any) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False  # gone for now: keep reading the old file until a new one appears
    opened = os.fstat(handle.fileno())
    return (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev) or now.st_size < handle.tell()


# -- listing runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What ``chargpt-tui runs`` shows about one run folder (None: not recorded)."""

    name: str
    path: str
    step: int | None
    max_iters: int | None
    best_val_loss: float | None
    parameters: int | None
    data: str | None
    device: str | None
    state: str | None  # the last state the run reported: training, finished, stopped, ...
    modified: float  # seconds since the epoch, newest of metrics.jsonl and ckpt.pt
    checkpoint_bytes: int | None  # size of ckpt.pt, None if there is none
    recipe: str | None = None  # lecture, fast or custom (see presets.recipe_of)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_runs(root: str | os.PathLike[str] = "runs") -> list[RunInfo]:
    """Every run folder directly under ``root`` (or ``root`` itself, if it is one), newest first.

    The ``latest`` link is skipped: it points at a run that is listed anyway.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"no runs folder at {root}",
                        "pass the folder that holds your runs: chargpt-tui runs PATH")
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    runs = [info for folder in folders if (info := read_run(folder)) is not None]
    return sorted(runs, key=lambda run: run.modified, reverse=True)


def read_run(folder: Path) -> RunInfo | None:
    """A run's summary, or None if ``folder`` holds neither metrics nor a checkpoint."""
    metrics, checkpoint = folder / METRICS_NAME, folder / CHECKPOINT_NAME
    stats = {p: p.stat() for p in (metrics, checkpoint) if p.is_file()}
    if not stats:
        return None
    summary = _summarize_metrics(metrics) if metrics in stats else {}
    if checkpoint in stats and (summary.get("step") is None or summary.get("parameters") is None):
        summary = {**_summarize_checkpoint(checkpoint), **{
            k: v for k, v in summary.items() if v is not None}}
    return RunInfo(
        name=folder.name, path=str(folder), step=summary.get("step"),
        max_iters=summary.get("max_iters"), best_val_loss=summary.get("best_val_loss"),
        parameters=summary.get("parameters"), data=summary.get("data"),
        device=summary.get("device"), state=summary.get("state"),
        modified=max(s.st_mtime for s in stats.values()),
        checkpoint_bytes=stats[checkpoint].st_size if checkpoint in stats else None,
        recipe=summary.get("recipe"),
    )


SUMMARY_KEYS = ("step", "max_iters", "best_val_loss", "parameters", "data", "device", "state",
                "recipe")


def _summarize_metrics(path: Path) -> dict[str, Any]:
    """The run's latest facts, reading its metrics backwards only as far as needed: the
    newest evaluation and start record are usually near the end."""
    summary: dict[str, Any] = dict.fromkeys(SUMMARY_KEYS)

    def fill(**values: Any) -> None:  # the newest value wins: we read from the end
        for key, value in values.items():
            if summary[key] is None:
                summary[key] = value

    for event in _events_backwards(path):
        if isinstance(event, TrainingStarted):
            fill(parameters=event.parameters, data=event.data, device=event.device,
                 max_iters=event.max_iters, step=event.step,
                 recipe=recipe_of({**event.config.get("model", {}),
                                   **event.config.get("train", {})}))
        elif isinstance(event, StepDone):
            fill(step=event.step, max_iters=event.max_iters)
        elif isinstance(event, EvalDone):
            fill(step=event.step, best_val_loss=event.best_val_loss)
        elif isinstance(event, CheckpointSaved):
            fill(step=event.step)
        elif isinstance(event, StateChanged):
            fill(state=event.state)
        if all(value is not None for value in summary.values()):
            break
    return summary


def _events_backwards(path: Path, block_size: int = BLOCK_BYTES) -> Iterator[Event]:
    """A metrics file's events from the last to the first, read in blocks from the end."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        carry = b""  # the start of a line cut by the previous (later) block
        while end > 0:
            start = max(0, end - block_size)
            handle.seek(start)
            lines = (handle.read(end - start) + carry).split(b"\n")
            carry = lines.pop(0) if start > 0 else b""
            yield from reversed(_parse_lines(lines))
            end = start


def _summarize_checkpoint(path: Path) -> dict[str, Any]:
    """Facts from ``ckpt.pt`` without reading its weights (memory-mapped, weights_only)."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return {
            "step": int(payload["step"]),
            "best_val_loss": payload.get("best_val_loss"),
            "parameters": sum(t.numel() for t in payload["model"].values()),
            "data": payload.get("data"),
            "max_iters": payload.get("train_config", {}).get("max_iters"),
            "recipe": recipe_of({**payload["model_config"], **payload.get("train_config", {})}),
        }
    except Exception:  # noqa: BLE001 - a damaged checkpoint is listed with what metrics say
        return {}
