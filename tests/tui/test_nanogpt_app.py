"""A nanoGPT checkpoint in the app (chat mode): every view opens on its model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tui_support import async_test, wait_until

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.tui.app import ChargptApp
from chargpt_tui.tui.sources import OpenCheckpoint

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from test_nanogpt import write_nanogpt_run  # noqa: E402


@pytest.mark.slow
@async_test
async def test_every_view_opens_on_a_nanogpt_checkpoint(tmp_path: Path) -> None:
    ckpt, _, _ = write_nanogpt_run(tmp_path / "out")
    opened = load_for_sampling(ckpt, "cpu")
    app = ChargptApp(OpenCheckpoint(ckpt, opened), device="cpu")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.live_model.ready, what="model")
        await pilot.press(*"Speak", "enter")
        chat = app.screen
        for key, view in (("f4", "AttentionScreen"), ("f7", "ModelViewScreen"),
                          ("f8", "SurpriseScreen"), ("f9", "EmbeddingsScreen")):
            await pilot.press(key)
            await wait_until(pilot, lambda view=view: type(app.screen).__name__ == view,
                             what=view)
            await pilot.pause(0.5)  # the view computes on the model, then draws
            assert not [n for n in app._notifications if n.severity == "error"], view
            await pilot.press("escape")
            await wait_until(pilot, lambda: app.screen is chat, what=f"{view} closed")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: not app.is_running, what="exit")
    assert app.return_code in (0, None)
