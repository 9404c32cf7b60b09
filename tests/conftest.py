"""Shared fixtures: small generated corpora and tiny trained runs (no network, no real data)."""

from __future__ import annotations

import os
from pathlib import Path

# Tests train tiny models, which run fastest on one thread; on a shared 2-core box OpenMP's
# threads also spin waiting for each other (a 40-step tiny run: 7.8 s on one thread, 36 s on
# two, load average 15). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import fcntl
import json
from collections.abc import Callable
from typing import Any

import pytest
from corpus import pseudo_shakespeare
from tiny_model import TINY_SHAPE


def make_corpus(n_chars: int = 20_000, seed: int = 0) -> str:
    """Generated play-shaped text of exactly ``n_chars`` characters."""
    return pseudo_shakespeare(lines=n_chars // 20 + 10, seed=seed)[:n_chars]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                   ) -> Path:
    """Every test gets its own download cache, so nothing leaks between tests or from $HOME."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CHARGPT_TUI_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True, scope="session")
def fixed_threads() -> None:
    """Tests train on torch's default threads, fixed as `--threads` would fix them: training's
    own measured choice (device.pick_threads) would let results differ from test to test."""
    import torch

    from chargpt_tui.device import set_torch_threads

    set_torch_threads(torch.get_num_threads())


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str,
                     make: Callable[[], Any]) -> Any:
    """``make()``'s JSON-able result, computed once per test session even when pytest-xdist runs
    several workers (each would otherwise run a module's costly fixture for its share of the
    module's tests, side by side): the first worker computes it under a lock, the others read
    it from the session's shared temp folder."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this session's
    result = shared / f"{name}.json"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.is_file():
            return json.loads(result.read_text(encoding="utf-8"))
        value = make()
        result.write_text(json.dumps(value), encoding="utf-8")
        return value


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_corpus(), encoding="utf-8")
    return path


TINY = dict(**TINY_SHAPE, batch_size=4, eval_iters=2, eval_interval=10, warmup_iters=2,
            learning_rate=3e-3)
