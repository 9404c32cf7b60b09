"""Tests of the Textual app: Pilot tests, snapshot tests (baselines in __snapshots__/ here) and
one end-to-end run in a real tmux terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_support import train_tiny_checkpoint


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `pytest -m tui` runs just this layer's tests.
    for item in items:
        if item.path.parent.name == "tui":
            item.add_marker(pytest.mark.tui)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained checkpoint (30 steps, fixed seed) for every test that only reads it:
    the app never writes to a run it opens or follows, so the tests can share it."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
