"""``chargpt-tui`` / ``chargpt-tui tui``: resolve options, then run the app until it exits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chargpt_tui.errors import ConfigError

if TYPE_CHECKING:
    from chargpt_tui.explain import Curves


def launch_tui(*, data: str | None, encoding: str, preset: str, overrides: dict[str, Any],
               out: Path | None, resume: Path | None, device: str, threads: int | None,
               checkpoint: Path | None, mouse: bool, follow: Path | None = None,
               compare: tuple[str, Curves] | None = None) -> int:
    """Run the app; returns the exit code (0, or 130/143/129 after SIGINT/SIGTERM/SIGHUP).

    Options that can be checked instantly are checked here, so a typo gives one line on the
    terminal instead of an app that opens only to show an error. Loading (and downloading) the
    data happens inside the app, where its progress is visible.
    """

    from chargpt_tui.checkpoint import resolve_checkpoint
    from chargpt_tui.device import pick_device, set_torch_threads
    from chargpt_tui.run_setup import RunSetup, prepare_run
    from chargpt_tui.tui.app import ChargptApp

    if follow is not None:
        if checkpoint is not None or resume is not None or data is not None:
            raise ConfigError("--follow watches a run trained elsewhere: leave out --data, "
                              "--resume and --checkpoint")
        if not follow.is_dir():
            raise ConfigError(f"--follow {follow}: no such run folder",
                              "give the --out folder of a running `chargpt-tui train`, "
                              "e.g. runs/latest")
    set_torch_threads(threads)
    pick_device(device)
    if follow is not None:
        app = ChargptApp(follow=follow, device=device, compare=compare, handle_signals=True)
    elif checkpoint is not None:
        app = ChargptApp(checkpoint=resolve_checkpoint(checkpoint, prefer_best=True),
                         device=device, compare=compare, handle_signals=True)
    else:
        def setup_factory(progress: Callable[[int, int | None], None],
                          notice: Callable[[str], None]) -> RunSetup:
            return prepare_run(data=data, preset=preset, overrides=overrides, out=out,
                               resume=resume, device=device, encoding=encoding,
                               progress=progress, notice=notice)

        app = ChargptApp(setup_factory=setup_factory, device=device, compare=compare,
                         handle_signals=True)
    app.run(mouse=mouse)
    return app.return_code or 0
