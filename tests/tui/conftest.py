"""Tests of the Textual app: Pilot tests, snapshot tests (baselines in __snapshots__/ here) and
one end-to-end run in a real tmux terminal."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `pytest -m tui` runs just this layer's tests.
    for item in items:
        if item.path.parent.name == "tui":
            item.add_marker(pytest.mark.tui)
