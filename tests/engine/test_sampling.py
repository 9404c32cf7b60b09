"""Sampling: the cached streamer equals the lecture's generate, filters do what they say, and
beam search finds what exhaustive search finds."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tiny_model import tiny_config
from torch.nn import functional as F

from chargpt_tui.errors import ConfigError
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.sampling import (
    SamplingParams,
    beam_search,
    filter_logits,
    generate,
    next_char_probabilities,
    prepare_prompt,
    sample_next,
    stream_beam_text,
    stream_tokens,
)
from chargpt_tui.tokenizer import CharTokenizer


def tiny_model(vocab: int = 13, block: int = 16, seed: int = 0) -> GPTLanguageModel:
    """A random tiny model in float64, so cached and uncached paths agree to the last bit
    that matters for argmax and multinomial draws."""
    torch.manual_seed(seed)
    config = tiny_config(vocab_size=vocab, block_size=block)
    model = GPTLanguageModel(config).double().eval()
    with torch.no_grad():  # sharper distributions than the 0.02-std init gives
        model.lm_head.weight.mul_(40)
    return model


def lecture_generate(model: GPTLanguageModel, prompt: list[int], n: int, temperature: float,
                     seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    out = generate(model, torch.tensor([prompt]), n, temperature=temperature, generator=generator)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_kv_cache_stream_equals_lecture_generate_inside_the_block(temperature: float) -> None:
    model = tiny_model()
    prompt = [1, 2, 3]
    params = SamplingParams(max_new_tokens=13, temperature=temperature, seed=7)
    cached = list(stream_tokens(model, prompt, params))
    assert cached == lecture_generate(model, prompt, 13, temperature, seed=7)
    assert len(set(cached)) > 2  # a real sequence, not one repeated token


def test_exact_policy_equals_lecture_generate_past_the_block() -> None:
    model = tiny_model()
    params = SamplingParams(max_new_tokens=40, temperature=0.9, seed=3, context_policy="exact")
    assert list(stream_tokens(model, [4, 5], params)) == lecture_generate(model, [4, 5], 40, 0.9, 3)


def refill_reference(model: GPTLanguageModel, prompt: list[int], n: int) -> list[int]:
    """What the refill policy promises, written the slow way: the context is everything since
    the last refill point, which jumps to the last block/2 tokens whenever a block is full."""
    block = model.config.block_size
    history = list(prompt)
    start = max(0, len(history) - block)
    out = []
    for _ in range(n):
        logits, _ = model(torch.tensor([history[start:]]))
        token = int(logits[0, -1].argmax())
        out.append(token)
        history.append(token)
        if len(history) - start > block:
            start = len(history) - block // 2
    return out


def test_refill_policy_past_the_block_matches_its_definition() -> None:
    model = tiny_model()
    params = SamplingParams(max_new_tokens=50, temperature=0.0)
    for prompt in ([3], list(range(13)) * 2):  # short prompt, and one longer than the block
        assert list(stream_tokens(model, prompt, params)) == refill_reference(model, prompt, 50)


def test_top_k_keeps_exactly_k_even_with_ties() -> None:
    logits = torch.tensor([[2.0, 2.0, 2.0, 1.0, 0.0]])
    kept = filter_logits(logits, SamplingParams(top_k=1))
    assert torch.isfinite(kept).sum() == 1
    kept = filter_logits(logits, SamplingParams(top_k=4))
    assert torch.isfinite(kept).sum() == 4 and kept[0, 4] == float("-inf")


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(filter_logits(logits, SamplingParams(top_p=0.7))).tolist() == [
        [True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, SamplingParams(top_p=0.01))).sum() == 1
    assert torch.isfinite(filter_logits(logits, SamplingParams(top_p=1.0))).all()


def test_temperature_filters_then_sampling_respects_them() -> None:
    logits = torch.tensor([[0.0, 1.0, 5.0, 0.5]])
    generator = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, SamplingParams(top_k=2, temperature=2.0), generator))
             for _ in range(200)}
    assert draws == {1, 2}
    assert int(sample_next(logits, SamplingParams(temperature=0))) == 2


def test_same_seed_same_text_different_seed_different_text() -> None:
    model = tiny_model()
    run = lambda seed: list(stream_tokens(model, [1], SamplingParams(  # noqa: E731
        max_new_tokens=30, temperature=1.0, seed=seed)))
    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(temperature=-0.1), "temperature"), (dict(top_p=0.0), "top-p"),
    (dict(top_p=1.5), "top-p"), (dict(top_k=0), "top-k"), (dict(beam_width=0), "beam width"),
    (dict(context_policy="slide"), "context policy"),
])
def test_sampling_params_reject_out_of_range_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SamplingParams(**kwargs)


@torch.no_grad()
def sequence_logprob(model: GPTLanguageModel, prompt: list[int], continuation: tuple[int, ...]
                     ) -> float:
    logits, _ = model(torch.tensor([prompt + list(continuation)]))
    logprobs = F.log_softmax(logits[0], dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + i, token])
               for i, token in enumerate(continuation))


def test_beam_search_finds_the_exhaustive_optimum_on_a_tiny_vocabulary() -> None:
    model = tiny_model(vocab=3, block=8, seed=4)
    prompt, length = [0, 1], 4
    scored = {seq: sequence_logprob(model, prompt, seq)
              for seq in itertools.product(range(3), repeat=length)}
    best = max(scored, key=scored.get)
    # Width ≥ V^(L-1) keeps every prefix alive, so beam search must be exact.
    *_, final = beam_search(model, prompt, SamplingParams(max_new_tokens=length, beam_width=27))
    assert tuple(final.best) == best
    assert final.scores[0] == pytest.approx(scored[best], abs=1e-9)
    # Every returned beam carries its true score, best first.
    for seq, score in zip(final.sequences, final.scores):
        assert score == pytest.approx(scored[tuple(seq)], abs=1e-9)
    assert final.scores == sorted(final.scores, reverse=True)
    # A narrow beam is never better than the optimum, and width 1 is greedy.
    *_, narrow = beam_search(model, prompt, SamplingParams(max_new_tokens=length, beam_width=2))
    assert narrow.scores[0] <= scored[best] + 1e-9
    *_, greedy_beam = beam_search(model, prompt, SamplingParams(max_new_tokens=length))
    greedy = list(stream_tokens(model, prompt, SamplingParams(max_new_tokens=length,
                                                              temperature=0)))
    assert greedy_beam.best == greedy


def test_beam_stream_stable_prefix_only_grows_and_survives() -> None:
    model = tiny_model()
    states = list(beam_search(model, [1, 2], SamplingParams(max_new_tokens=40, beam_width=4)))
    assert states[-1].done and not any(s.done for s in states[:-1])
    final = states[-1].best
    stables = [s.stable for s in states]
    assert stables == sorted(stables)
    for state in states:  # what was shown as stable is a prefix of the final answer
        assert state.best[: state.stable] == final[: state.stable]
    assert len(final) == 40  # past block_size (16): the refill policy applies to beams too


def test_no_repeat_ngram_guard_prevents_repeats() -> None:
    model = tiny_model(seed=2)
    n = 3
    *_, plain = beam_search(model, [1], SamplingParams(max_new_tokens=30, beam_width=3))
    *_, guarded = beam_search(model, [1], SamplingParams(max_new_tokens=30, beam_width=3,
                                                         no_repeat_ngram=n))
    grams = lambda seq: [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]  # noqa: E731
    assert len(grams(plain.best)) != len(set(grams(plain.best)))  # it does repeat unguarded
    assert len(grams([1, *guarded.best])) == len(set(grams([1, *guarded.best])))


def test_beam_result_returns_texts_and_scores() -> None:
    model = tiny_model()
    tokenizer = CharTokenizer("abcdefghijklm")
    *_, state = beam_search(model, tokenizer.encode("abc"),
                            SamplingParams(max_new_tokens=6, beam_width=3))
    result = state.result(tokenizer)
    assert len(result.texts) == 3 == len(result.scores) and result.chars == 6
    assert result.texts[0] == tokenizer.decode(state.best)
    assert all(len(text) == 6 and math.isfinite(score)
               for text, score in zip(result.texts, result.scores))


def test_streamed_beam_text_adds_up_to_the_best_beam() -> None:
    """The settled pieces never change: joined, they are a prefix of the final best beam, and
    with the last tentative tail they are the whole of it."""
    model = tiny_model()
    tokenizer = CharTokenizer("abcdefghijklm")
    params = SamplingParams(max_new_tokens=12, beam_width=3)
    updates = list(stream_beam_text(model, tokenizer, prepare_prompt(tokenizer, "abc", 16),
                                    params))
    best = updates[-1].state.result(tokenizer).texts[0]
    settled = ""
    for update in updates:
        settled += update.stable
        assert best.startswith(settled)
    assert settled + updates[-1].tentative == best and len(best) == 12


def test_next_char_probabilities_match_the_models_softmax() -> None:
    model = tiny_model()
    tokenizer = CharTokenizer("abcdefghijklm")
    top = next_char_probabilities(model, tokenizer, "abc", 4)
    logits, _ = model(torch.tensor([tokenizer.encode("abc")]))
    probs = logits[0, -1].softmax(-1)
    assert [char for char, _ in top] == [tokenizer.vocab[i] for i in probs.topk(4).indices]
    assert [p for _, p in top] == pytest.approx(probs.topk(4).values.tolist())
    assert len(next_char_probabilities(model, tokenizer, "abc", 99)) == 13  # capped at the vocab


def test_prepare_prompt_drops_unknown_characters_and_reports_cropping() -> None:
    tokenizer = CharTokenizer("\nabc")
    prompt = prepare_prompt(tokenizer, "abxcz", block_size=3)
    assert prompt.ids == tokenizer.encode("abc") and prompt.dropped == "xz"
    assert prompt.cropped == 0
    assert "'x', 'z'" in prompt.warnings()[0]
    long = prepare_prompt(tokenizer, "abcabc", block_size=4)
    assert long.cropped == 2 and "last 4 characters" in long.warnings()[0]
    assert prepare_prompt(tokenizer, "", 4).ids == [0]  # empty prompt starts from a newline
