"""``chargpt-tui --lecture`` on the command line: what does not go with it is refused in one line
(exit 2) before the screen opens, as is a rung that does not exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargpt_tui.cli import main

MISTAKES = {
    "checkpoint": (["--lecture", "--checkpoint", "runs/latest"],
                   ["--lecture", "leave out --checkpoint, --follow and --resume"]),
    "follow": (["--lecture", "--follow", "runs/latest"], ["leave out --checkpoint, --follow"]),
    "resume": (["tui", "--lecture", "--resume", "runs/latest"], ["--resume"]),
    "model options": (["--lecture", "--preset", "tiny", "--n-embd", "64"],
                      ["lecture's own settings", "leave out --preset, --n-embd",
                       "it takes --time-budget"]),
    "through alone": (["--through", "one-head"], ["add --lecture"]),
    "scaled budget alone": (["--scaled-budget", "5m"], ["add --lecture"]),
    "unknown rung": (["--lecture", "--through", "transformer"],
                     ["unknown rung 'transformer'", "layernorm"]),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_a_mistake_with_lecture_is_one_line_before_the_screen(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    args, needles = MISTAKES[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARGPT_TUI_FORCE_TUI", "1")  # a late check would open the screen
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--device", "cpu"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert all(needle in lines[0] for needle in needles), lines[0]
    assert not list(tmp_path.iterdir())  # nothing written, no text loaded
