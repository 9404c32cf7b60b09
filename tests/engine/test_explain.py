"""The explain engine against hand-computed cases: attention rows, per-character loss, PCA,
the weights history and run curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F
from tui_support import train_tiny_checkpoint

from chargpt_tui import history
from chargpt_tui.errors import UserError
from chargpt_tui.explain import (
    SHADE_256,
    attention_over,
    char_group,
    compare_label,
    mean_look_back,
    pca_2d,
    run_curves,
    shade_bounds,
    shade_char,
    shade_level,
    surprise,
)
from chargpt_tui.model import GPTConfig, GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer

VOCAB = "\n !,.:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def model_and_tokenizer(block_size: int = 16, attention: str = "fused", **recipe: Any
                        ) -> tuple[GPTLanguageModel, CharTokenizer]:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=len(VOCAB), block_size=block_size, n_layer=2, n_head=2,
                       n_embd=16, attention=attention, **recipe)
    return GPTLanguageModel(config).eval().requires_grad_(False), CharTokenizer(VOCAB)


# -- attention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["fused", "heads"])
def test_two_character_attention_row_by_hand(attention: str) -> None:
    model, tokenizer = model_and_tokenizer(attention=attention)
    seen = attention_over(model, tokenizer, tokenizer.encode("hi"))
    assert seen.chars == "hi" and (seen.n_layer, seen.n_head) == (2, 2)
    for layer in range(2):
        for head in (0, 1, None):
            first, second = seen.row(layer, head, 0), seen.row(layer, head, 1)
            assert first == pytest.approx([1.0])  # the first character can only see itself
            assert len(second) == 2 and sum(second) == pytest.approx(1.0)
    # The layer mean is the mean of its heads' rows.
    heads = [seen.row(1, h, 1) for h in range(2)]
    assert seen.row(1, None, 1) == pytest.approx([(a + b) / 2 for a, b in zip(*heads)])
    # Recompute layer 0 by hand: LayerNorm, q·k / sqrt(head_size), softmax over the two keys.
    x = model.token_embedding_table.weight[tokenizer.encode("hi")] + \
        model.position_embedding_table.weight[:2]
    x = model.blocks[0].ln1(x)
    size = model.config.head_size
    for head in range(2):
        if attention == "fused":
            q, k, _ = model.blocks[0].sa.qkv(x).split(model.config.n_embd, dim=-1)
            q, k = (t[:, head * size:(head + 1) * size] for t in (q, k))
        else:
            module = model.blocks[0].sa.heads[head]
            q, k = module.query(x), module.key(x)
        scores = (q[1] @ k.T) / math.sqrt(size)
        assert seen.row(0, head, 1) == pytest.approx(scores.softmax(-1).tolist(), abs=1e-6)


def test_a_text_longer_than_the_context_keeps_its_start_as_before() -> None:
    model, tokenizer = model_and_tokenizer(block_size=16)
    text = "hi there, " * 3  # 30 characters: the model sees the last 16
    seen = attention_over(model, tokenizer, tokenizer.encode(text))
    assert seen.chars == text[-16:] and seen.before == text[:-16]
    assert seen.maps[0].shape[-1] == 16
    # The window is attended to exactly as if it were the whole text.
    alone = attention_over(model, tokenizer, tokenizer.encode(text[-16:]))
    assert alone.before == "" and torch.equal(alone.maps[0], seen.maps[0])


def test_shades_follow_the_weights() -> None:
    row = [0.25, 0.75]  # a two-character row
    assert [shade_char(w) for w in row] == ["▓", "█"]
    assert shade_level(1.0, len(SHADE_256)) == len(SHADE_256) - 1
    assert shade_level(0.0, len(SHADE_256)) == 0
    # Log scale from 0.01 to 1: each of the four shades covers a factor of 10 ** 0.5.
    assert shade_bounds(5) == pytest.approx([0.01, 0.01 ** 0.75, 0.1, 0.01 ** 0.25])
    assert [shade_char(w) for w in (0.009, 0.01, 0.03, 0.05, 0.2, 0.5)] == list(" ░░▒▓█")
    levels = [shade_level(w / 100, len(SHADE_256)) for w in range(101)]
    assert levels == sorted(levels) and levels[-1] == len(SHADE_256) - 1


def test_look_back_of_a_previous_character_head() -> None:
    # Every character attends entirely to the one before it (the first to itself).
    grid = torch.zeros(5, 5)
    grid[0, 0] = 1
    for q in range(1, 5):
        grid[q, q - 1] = 1
    assert mean_look_back(grid) == pytest.approx(4 / 5)
    assert mean_look_back(torch.eye(5)) == 0.0


# -- surprise -----------------------------------------------------------------------------------


def test_surprise_equals_cross_entropy_inside_the_context() -> None:
    model, tokenizer = model_and_tokenizer()
    ids = tokenizer.encode("ROMEO: thou art")
    result = surprise(model, tokenizer, ids, top_k=3)
    logits, _ = model(torch.tensor([ids[:-1]]))
    expected = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="none")
    assert result.nats[0] is None and result.bits[0] is None
    assert result.nats[1:] == pytest.approx(expected.tolist(), abs=1e-5)
    assert result.bits[1:] == pytest.approx((expected / math.log(2)).tolist(), abs=1e-5)
    assert result.mean_nats == pytest.approx(float(expected.mean()), abs=1e-5)
    # The guesses are the three likeliest characters, from the same distribution.
    probs = logits[0, 4].softmax(-1)
    best = probs.topk(3)
    assert [c for c, _ in result.guesses[5]] == [VOCAB[i] for i in best.indices.tolist()]
    assert [p for _, p in result.guesses[5]] == pytest.approx(best.values.tolist(), abs=1e-6)


@pytest.mark.parametrize("stride", [1, 5, 8])
def test_surprise_past_the_context_uses_sliding_windows(stride: int) -> None:
    model, tokenizer = model_and_tokenizer(block_size=8)
    ids = tokenizer.encode("ROMEO: thou art my love, the night")
    result = surprise(model, tokenizer, ids, stride=stride)
    assert result.context == 8 - stride + 1 and all(n is not None for n in result.nats[1:])
    # Window k starts at k * stride and predicts the characters k * stride + 1 .. + 8; each
    # character is scored by the first window that predicts it.
    for t in range(1, len(ids)):
        start = 0 if t <= 8 else math.ceil((t - 8) / stride) * stride
        logits, _ = model(torch.tensor([ids[start:start + 8]]))
        expected = F.cross_entropy(logits[0, t - start - 1:t - start], torch.tensor([ids[t]]))
        assert result.nats[t] == pytest.approx(float(expected), abs=1e-5)
        assert t - start >= min(t, result.context)  # the context the docstring promises


# The fast recipe's model parts (README: the recipe); rotary models have no position table.
FAST_PARTS: dict[str, Any] = dict(rope=True, qk_norm=True)


@pytest.mark.parametrize("stride", [None, 1, 5])
def test_rotary_surprise_past_the_context_is_the_models_own_forward(stride: int | None) -> None:
    """A rotary model reads any length in one forward (a block-wide sliding window per layer,
    so deeper layers reach further back): surprise is that forward's cross-entropy, not a
    windowed estimate, whatever the stride."""
    model, tokenizer = model_and_tokenizer(block_size=8, **FAST_PARTS)
    assert not hasattr(model, "position_embedding_table")
    ids = tokenizer.encode("ROMEO: thou art my love, the night is sweet")
    result = surprise(model, tokenizer, ids, stride=stride, top_k=2)
    logits, _ = model(torch.tensor([ids[:-1]]))
    expected = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="none")
    assert result.nats[1:] == pytest.approx(expected.tolist(), abs=1e-5)
    assert result.context == 8
    # Windows would differ: the full forward sees more than one block through the layers.
    windowed, _ = model(torch.tensor([ids[-9:-1]]))
    assert float(F.cross_entropy(windowed[0, -1:], torch.tensor(ids[-1:]))) != pytest.approx(
        result.nats[-1], abs=1e-5)


def test_rotary_surprise_of_a_very_long_text_falls_back_to_windows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chargpt_tui.explain.ROTARY_FULL_FORWARD_CHARS", 20)
    model, tokenizer = model_and_tokenizer(block_size=8, **FAST_PARTS)
    ids = tokenizer.encode("ROMEO: thou art my love, the night")
    result = surprise(model, tokenizer, ids, stride=8)
    assert result.context == 1  # windows of 8 every 8: the documented lower bound
    logits, _ = model(torch.tensor([ids[8:16]]))
    expected = F.cross_entropy(logits[0, :1], torch.tensor(ids[9:10]))
    assert result.nats[9] == pytest.approx(float(expected), abs=1e-5)


def test_rotary_attention_rows_equal_the_models_weights() -> None:
    model, tokenizer = model_and_tokenizer(block_size=8, **FAST_PARTS)
    ids = tokenizer.encode("KING: good day to you")
    shown = attention_over(model, tokenizer, ids)
    maps = model.attention_maps(torch.tensor([ids[-8:]]))
    assert shown.chars == "ay to you"[-8:] and shown.n_layer == 2
    for layer in range(2):
        assert shown.row(layer, 1, 5) == pytest.approx(maps[layer][1, 5, :6].tolist())
        assert sum(shown.row(layer, None, 7)) == pytest.approx(1.0)


# -- embeddings ---------------------------------------------------------------------------------


def test_pca_of_a_known_embedding() -> None:
    # Points on two orthogonal directions of a 4-d space: spread 3 along u, 1 along v.
    u = torch.tensor([1.0, 1.0, 0.0, 0.0]) / math.sqrt(2)
    v = torch.tensor([0.0, 0.0, 1.0, -1.0]) / math.sqrt(2)
    a = torch.tensor([3.0, -3.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 1.0, -1.0])
    offset = torch.tensor([5.0, 2.0, -1.0, 7.0])  # centring must remove it
    embeddings = a.view(-1, 1) * u + b.view(-1, 1) * v + offset
    projection = pca_2d(embeddings)
    # Variance 18 along u, 2 along v: 90% and 10%.
    assert projection.explained == pytest.approx((0.9, 0.1))
    for axis, expected in ((0, a), (1, b)):
        got = projection.points[:, axis]
        sign = 1.0 if float(got @ expected) > 0 else -1.0  # PCA's axes are defined up to sign
        assert (sign * got).tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_pca_keeps_the_pictures_orientation_from_step_to_step() -> None:
    """The same arrangement of characters, its embedding space turned (as training turns it
    between saved steps): oriented like the previous picture, it is drawn the same; by the
    largest-loading convention alone, some turns mirror it."""
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(30, 8, generator=generator) * torch.linspace(3, 0.5, 8)
    before = pca_2d(embeddings)
    mirrored = 0
    for _ in range(20):
        turn, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))  # a random rotation
        plain = pca_2d(embeddings @ turn)
        mirrored += not torch.allclose(plain.points, before.points, atol=1e-4)
        aligned = pca_2d(embeddings @ turn, like=before.points)
        assert torch.allclose(aligned.points, before.points, atol=1e-4)
        assert aligned.explained == pytest.approx(before.explained, abs=1e-5)
    assert mirrored  # the case the alignment is for (14 of these 20 turns here)
    # A negated embedding is the same picture too, and a picture of other characters (another
    # vocabulary) is no guide: the convention applies.
    assert torch.allclose(pca_2d(-embeddings, like=before.points).points, before.points,
                          atol=1e-4)
    assert torch.equal(pca_2d(embeddings, like=torch.ones(5, 2)).points, before.points)


def test_character_groups() -> None:
    assert [char_group(c) for c in "aZk7? \n"] == [
        "vowel", "capital", "consonant", "digit", "punctuation", "whitespace", "whitespace"]


# -- weights history ----------------------------------------------------------------------------


def test_thinning_keeps_the_bound_the_first_and_the_newest() -> None:
    steps = list(range(0, 2001, 100))  # 21 evaluations
    dropped = history.thin(steps, 5)
    kept = sorted(set(steps) - set(dropped))
    assert len(kept) == 5 and kept[0] == 0 and kept[-1] == 2000
    gaps = [b - a for a, b in zip(kept, kept[1:])]
    assert max(gaps) <= 2 * min(gaps)  # spread over the run, not bunched at one end
    assert history.thin(steps, 1) == steps[:-1] and history.thin([3, 7], 5) == []


def test_history_of_a_run_keeps_the_bound_and_loads(tmp_path: Path) -> None:
    run = train_tiny_checkpoint(tmp_path, max_iters=50, history_keep=3).parent
    steps = history.saved_steps(run)
    # Evaluations at 0, 10, ..., 50; thinned after each: [0 10 20 30] drops 10, then 30, 40.
    assert steps == [0, 20, 50]
    model, tokenizer = history.load_step(run, 50)
    latest = torch.load(run / "ckpt.pt", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["lm_head.weight"], latest["lm_head.weight"])
    assert tokenizer.vocab_size == model.config.vocab_size


def test_a_model_too_big_for_the_budget_keeps_no_history() -> None:
    assert history.files_to_keep(history.HISTORY_BYTES // 2, 12) == 2
    assert history.files_to_keep(history.HISTORY_BYTES, 12) == 0
    assert history.files_to_keep(1000, 12) == 12 and history.files_to_keep(1000, 0) == 0


# -- runs compared ------------------------------------------------------------------------------


def test_comparing_a_run_with_itself_gives_identical_curves(tmp_path: Path) -> None:
    run = train_tiny_checkpoint(tmp_path, max_iters=20).parent
    first, second = run_curves(run), run_curves(run / "metrics.jsonl")
    assert first == second
    assert [s for s, _ in first.steps] == list(range(1, 21))
    assert [s for s, _ in first.val] == [0, 10, 20] and len(first.train) == 3
    with pytest.raises(UserError, match="no training log"):
        run_curves(tmp_path / "nowhere")
    assert compare_label(run) == compare_label(run / "metrics.jsonl") == run.resolve().name
