"""`chargpt-tui explain`: the coloured text, --json per-character losses, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_robust import assert_one_line_error, invoke
from tiny_model import open_model
from tui_support import train_tiny_checkpoint

from chargpt_tui.explain import surprise

TEXT = "ROMEO:\nThou art my love, the night is sweet."


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_checkpoint(tmp_path_factory.mktemp("explain"), max_iters=20).parent


def test_json_gives_the_engine_losses(run: Path) -> None:
    result = invoke("explain", "--checkpoint", str(run), "--text", TEXT, "--json",
                    "--device", "cpu", "--stride", "4")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    model, tokenizer = open_model(run, prefer_best=True)
    expected = surprise(model, tokenizer, tokenizer.encode(TEXT), stride=4)
    assert report["text"] == TEXT and report["context"] == 16 - 4 + 1
    assert [c["nats"] for c in report["chars"]][1:] == pytest.approx(expected.nats[1:])
    assert report["chars"][0]["nats"] is None
    bits = [c["bits"] for c in report["chars"][1:]]
    assert bits == pytest.approx([n / math.log(2) for n in expected.nats[1:]])
    assert report["mean_nats"] == pytest.approx(expected.mean_nats)
    assert all(len(c["guesses"]) == 5 for c in report["chars"][1:])


def test_plain_output_shows_the_text_and_the_hardest_characters(run: Path, tmp_path: Path
                                                                 ) -> None:
    source = tmp_path / "scene.txt"
    source.write_text(TEXT, encoding="utf-8")
    result = invoke("explain", "--checkpoint", str(run), "--file", str(source),
                    "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "Thou art my love" in result.stdout and "hardest characters" in result.stdout
    assert "perplexity" in result.stdout and "step 20" in result.stdout


@pytest.mark.parametrize(("args", "needle"), [
    ((), "--text or --file"),
    (("--text", "R"), "at least two"),
    (("--text", "ROMEO", "--stride", "99"), "stride"),
    (("--file", "/nowhere/at/all.txt"), "cannot read"),
    (("--text", "ROMEO", "--top-k", "0"), "top-k"),
])
def test_bad_input_is_one_line(run: Path, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(invoke("explain", "--checkpoint", str(run), "--device", "cpu", *args),
                          needle)


# -- the app's view options: --compare and --history-keep --------------------------------------


def test_compare_is_read_before_the_app_opens(run: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from chargpt_tui.explain import compare_label, run_curves
    from chargpt_tui.tui import launch

    launched: list[dict[str, object]] = []
    monkeypatch.setattr(launch, "resolve_source", lambda **kwargs: None)
    monkeypatch.setattr(launch, "run_app",
                        lambda source, **kwargs: launched.append(kwargs) or (0, []))
    monkeypatch.setenv("CHARGPT_TUI_FORCE_TUI", "1")
    bad = invoke("tui", "--compare", str(tmp_path / "nowhere"), "--no-mouse")
    assert bad.exit_code == 2
    assert_one_line_error(bad, "no training log", "nowhere")
    assert not launched  # the screen never opened
    good = invoke("tui", "--compare", str(run), "--no-mouse")
    assert good.exit_code == 0, good.stderr
    assert launched[0]["compare"] == [(compare_label(run), run_curves(run))]


def test_history_keep_bounds_the_saved_weights(tmp_path: Path) -> None:
    from corpus import write_corpus
    from tiny_model import tiny_cli_args

    from chargpt_tui import history

    data = write_corpus(tmp_path)
    result = invoke("train", "--data", str(data), *tiny_cli_args(), "--max-iters", "20",
                    "--eval-interval", "5", "--history-keep", "2", "--out",
                    str(tmp_path / "run"), "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert history.saved_steps(tmp_path / "run") == [0, 20]  # 5 evaluations, 2 kept
    negative = invoke("train", "--data", str(data), *tiny_cli_args(), "--history-keep", "-1",
                      "--out", str(tmp_path / "other"), "--device", "cpu")
    assert_one_line_error(negative, "history-keep must not be negative")
