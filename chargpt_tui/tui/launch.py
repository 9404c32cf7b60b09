"""``chargpt-tui`` / ``chargpt-tui tui``: resolve what to show, then run the app until it exits.

Everything ``train`` and ``sample`` check up front is checked here too, before the screen opens
(preset, options, data, checkpoint, follow folder): a mistake gives the same one line and exit
code instead of an app that opens only to show an error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chargpt_tui.errors import ConfigError
from chargpt_tui.tui.sources import FollowRun, OpenCheckpoint, ReplayLecture, Source, TrainNew

if TYPE_CHECKING:
    from chargpt_tui.explain import Curves


def resolve_source(*, data: str | None, encoding: str, preset: str, overrides: dict[str, Any],
                   out: Path | None, resume: Path | None, device: str,
                   checkpoint: Path | None, follow: Path | None,
                   progress: Callable[[int, int | None], None] | None = None,
                   encode_progress: Callable[[int, int | None], None] | None = None,
                   meta: Path | None = None) -> Source:
    """The app's source, checked and loaded: raises a UserError for anything wrong with it."""
    from chargpt_tui.checkpoint import load_for_sampling
    from chargpt_tui.device import pick_device
    from chargpt_tui.run_setup import prepare_run

    pick_device(device)
    if follow is not None:
        if checkpoint is not None or resume is not None or data is not None:
            raise ConfigError("--follow watches a run trained elsewhere: leave out --data, "
                              "--resume and --checkpoint")
        if not follow.is_dir():
            raise ConfigError(f"--follow {follow}: no such run folder",
                              "give the --out folder of a running `chargpt-tui train`, "
                              "e.g. runs/latest")
        return FollowRun(follow)
    if checkpoint is not None:
        opened = load_for_sampling(checkpoint, device, prefer_best=True, meta=meta)
        return OpenCheckpoint(opened.file, opened)
    # Notices (e.g. the offline fallback) stay in the setup: the trainer publishes them when it
    # starts, so they land in the app's log and notifications.
    setup = prepare_run(data=data, preset=preset, overrides=overrides, out=out, resume=resume,
                        device=device, encoding=encoding, progress=progress,
                        encode_progress=encode_progress)
    return TrainNew(lambda _progress, _notice: setup)


def resolve_lecture(*, through: str | None, data: str | None, encoding: str, device: str,
                    out: Path | None, seed: int, time_budget: float | None,
                    scaled_budget: float | None, max_iters: int | dict[str, int] | None,
                    eval_iters: int | None, threads: int | None,
                    progress: Callable[[int, int | None], None] | None = None,
                    notice: Callable[[str], None] | None = None) -> ReplayLecture:
    """``--lecture``: the ladder, checked as ``chargpt-tui lecture`` checks it (an unknown rung,
    a taken folder) and its text loaded, before the screen opens. ``max_iters`` caps every
    rung's steps, or (a mapping) the named rungs'."""
    from chargpt_tui.ladder import prepare_ladder

    return ReplayLecture(prepare_ladder(
        through=through, data=data, encoding=encoding, device=device, out=out, seed=seed,
        time_budget=time_budget, scaled_budget=scaled_budget, max_iters=max_iters,
        eval_iters=eval_iters, threads=threads, progress=progress, notice=notice,
        prompts_cut_in=True))


def run_app(source: Source, *, device: str, mouse: bool,
            compare: list[tuple[str, Curves]] | None = None) -> tuple[int, list[str]]:
    """Run the app; returns its exit code (0, 1 after a failure, 130/143/129 after
    SIGINT/SIGTERM/SIGHUP) and the lines to print once the screen is gone. ``compare``: other
    runs' curves to lay over the chart (``--compare``)."""
    from chargpt_tui.tui.app import ChargptApp

    app = ChargptApp(source, compare=compare, device=device, handle_signals=True)
    app.run(mouse=mouse)
    return app.return_code or 0, app.farewell()
