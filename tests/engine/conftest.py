"""Engine tests: one file per module (tests/engine/test_<module>.py), no UI library involved."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `pytest -m engine` runs just this layer's tests.
    for item in items:
        if item.path.parent.name == "engine":
            item.add_marker(pytest.mark.engine)
