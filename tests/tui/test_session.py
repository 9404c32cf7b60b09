"""The app's sessions on their own: which steering keys each allows, what pause, save and stop
answer where nothing trains, and a trained run's stop and close, hosted by a bare panel."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.app import App, ComposeResult
from tui_support import async_test, tiny_factory, wait_until, write_data

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.tui.session import (
    STEERING,
    CheckpointSession,
    EmptySession,
    FollowSession,
    Session,
    TrainSession,
    session_for,
)
from chargpt_tui.tui.sources import FollowRun, OpenCheckpoint, TrainNew
from chargpt_tui.tui.widgets.event_log import EventLog
from chargpt_tui.tui.widgets.training_panel import TrainingPanel


class Host(App[None]):
    """A training panel alone, hosting a session's workers as the app does."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.panel = TrainingPanel(sample_placeholder=session.sample_placeholder)

    def compose(self) -> ComposeResult:
        yield self.panel

    def on_mount(self) -> None:
        self.session.start(self.panel)

    def on_unmount(self) -> None:
        self.session.close()


def train_session(tmp_path: Path, **overrides: object) -> TrainSession:
    return TrainSession(TrainNew(tiny_factory(write_data(tmp_path), tmp_path / "run",
                                              eval_interval=100_000, **overrides)), "cpu")


def test_each_kind_of_source_gets_its_session(tmp_path: Path) -> None:
    assert isinstance(session_for(TrainNew(tiny_factory(tmp_path, tmp_path)), "cpu"),
                      TrainSession)
    assert isinstance(session_for(OpenCheckpoint(tmp_path / "ckpt.pt"), "cpu"),
                      CheckpointSession)
    assert isinstance(session_for(FollowRun(tmp_path), "cpu"), FollowSession)
    assert isinstance(session_for(None), EmptySession)


def test_only_a_trained_run_has_steering_keys(tmp_path: Path) -> None:
    assert TrainSession.actions == STEERING == {"pause", "resume", "toggle_pause", "save"}
    for session in (CheckpointSession(OpenCheckpoint(tmp_path / "ckpt.pt")),
                    FollowSession(FollowRun(tmp_path)), EmptySession()):
        assert session.actions == frozenset()
        assert all(session.allows(action) is False for action in STEERING)  # hidden


def test_steering_keys_are_dimmed_until_training_runs(tmp_path: Path) -> None:
    session = train_session(tmp_path)  # not started: nothing to steer yet
    assert [session.allows(action) for action in ("pause", "resume", "toggle_pause", "save")
            ] == [None, False, None, None]
    assert session.toggle_pause() is None and not session.request_save()
    assert not session.stop("quit") and not session.running


@pytest.mark.parametrize("kind", ["checkpoint", "follow"])
def test_pause_save_and_stop_do_not_apply_where_nothing_trains(kind: str, tmp_path: Path
                                                               ) -> None:
    session = (CheckpointSession(OpenCheckpoint(tmp_path / "ckpt.pt")) if kind == "checkpoint"
               else FollowSession(FollowRun(tmp_path)))
    assert session.toggle_pause() is None  # nothing to pause
    assert session.request_save() is False  # nothing to save
    assert session.stop("quit") is False  # nothing to stop: the app exits at once
    assert not session.running and not session.paused and not session.can_control


def test_the_run_folder_is_known_from_the_source(tmp_path: Path) -> None:
    (tmp_path / "ckpt.pt").touch()
    assert CheckpointSession(OpenCheckpoint(tmp_path / "ckpt.pt")).run_dir == tmp_path
    assert CheckpointSession(OpenCheckpoint(tmp_path)).run_dir == tmp_path
    assert FollowSession(FollowRun(tmp_path)).run_dir == tmp_path
    assert train_session(tmp_path).run_dir is None  # until the run starts


def test_farewells_name_what_to_run_next(tmp_path: Path) -> None:
    opened = CheckpointSession(OpenCheckpoint(tmp_path))
    assert opened.farewell(None, None) == [f"try: chargpt-tui sample --checkpoint {tmp_path}"]
    # once open, the suggested prompt fits the text the checkpoint was trained on
    for data, vocab, prompt in (("shakespeare", "\n :EMORabc", " --prompt ROMEO:"),
                                ("python-stdlib", "\n defabc", " --prompt 'def '"),
                                ("shakespeare", "abc", "")):
        opened._opened = SimpleNamespace(  # type: ignore[assignment]
            payload={"data": data}, tokenizer=SimpleNamespace(vocab=vocab))
        assert opened.farewell(None, None) == [
            f"try: chargpt-tui sample --checkpoint {tmp_path}{prompt}"]
    assert FollowSession(FollowRun(tmp_path)).farewell(None, None)[0].startswith(
        f"followed {tmp_path}; its newest checkpoint")
    assert train_session(tmp_path).farewell("data file not found", None) == [
        "training failed: data file not found", "no checkpoint was saved"]


@async_test
async def test_a_trained_runs_stop_leaves_a_checkpoint(tmp_path: Path) -> None:
    session = train_session(tmp_path)
    ckpt = tmp_path / "run" / "ckpt.pt"
    host = Host(session)
    async with host.run_test() as pilot:
        await wait_until(pilot, lambda: session.running and session.trainer is not None
                         and session.trainer.step >= 3, what="training")
        assert session.run_dir == tmp_path / "run"
        assert session.allows("pause") is True and session.allows("resume") is False
        assert session.toggle_pause() is True
        assert session.allows("pause") is False and session.allows("resume") is True
        await wait_until(pilot, lambda: host.panel.stats.state == "paused", what="paused")
        assert not ckpt.exists()
        assert session.stop("test over")
        await wait_until(pilot, lambda: host.panel.stats.state == "stopped", what="the stop")
        await wait_until(pilot, lambda: not session.running, what="the worker's end")
        assert session.allows("pause") is None  # dimmed: nothing runs any more
        assert not session.stop("again")
        entries = "\n".join(host.panel.query_one(EventLog).entries)
        assert "training on" in entries and "training stopped: test over" in entries
    assert session.trainer is not None and load_checkpoint(ckpt)["step"] == session.trainer.step
    assert session.last_saved is not None and session.last_saved.reason == "stop"
    assert session.farewell(None, None)[0] == f"checkpoint: {ckpt} (step {session.trainer.step})"


@async_test
async def test_closing_the_app_ends_a_paused_run_with_a_checkpoint(tmp_path: Path) -> None:
    session = train_session(tmp_path)
    async with Host(session).run_test() as pilot:
        await wait_until(pilot, lambda: session.can_control, what="training")
        session.toggle_pause()
    # Closed while paused: a trainer left alone would wait for a resume for ever.
    deadline = time.monotonic() + 20
    while session.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not session.running
    assert session.last_saved is not None and session.last_saved.reason == "stop"
    assert (tmp_path / "run" / "ckpt.pt").exists()
