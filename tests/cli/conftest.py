"""Tests of the headless views as a user runs them: the command line, the bench, bad input and
faults (real processes and signals)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `pytest -m cli` runs just this layer's tests.
    for item in items:
        if item.path.parent.name == "cli":
            item.add_marker(pytest.mark.cli)
