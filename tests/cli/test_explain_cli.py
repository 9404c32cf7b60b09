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
