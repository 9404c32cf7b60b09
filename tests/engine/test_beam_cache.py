"""Beam search through the KV cache equals a brute-force beam search that re-runs the model.

The cache reorder copies only the rows whose parent changed, and only their filled positions;
this checks that shortcut against the definition.
"""

from __future__ import annotations

import pytest
import torch
from tiny_model import tiny_config
from torch.nn import functional as F

from chargpt_tui.kv_cache import KVCache
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.sampling import SamplingParams, beam_search


def peaked_model(seed: int) -> GPTLanguageModel:
    """A small random model with large weights: distinct log-probabilities, so no near-ties
    that rounding could order differently in the two computations."""
    torch.manual_seed(seed)
    model = GPTLanguageModel(tiny_config(vocab_size=12, block_size=24))
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.6)
    return model.eval()


@torch.no_grad()
def brute_force_beams(model: GPTLanguageModel, prompt: list[int], width: int,
                      steps: int) -> list[tuple[list[int], float]]:
    """Every extension of every beam scored by a full forward pass; keep the best ``width``."""
    beams = [([], 0.0)]
    for _ in range(steps):
        candidates = []
        for generated, score in beams:
            logits, _ = model(torch.tensor([prompt + generated]))
            log_probs = F.log_softmax(logits[0, -1], dim=-1)
            candidates += [(generated + [token], score + float(log_probs[token]))
                           for token in range(log_probs.numel())]
        beams = sorted(candidates, key=lambda beam: -beam[1])[:width]
    return beams


@pytest.mark.parametrize(("seed", "width"), [(0, 3), (1, 4), (2, 8)])
def test_cached_beam_search_equals_brute_force(seed: int, width: int) -> None:
    model = peaked_model(seed)
    prompt = [1, 5, 2]
    steps = model.config.block_size - len(prompt)
    *_, final = beam_search(model, prompt, SamplingParams(steps, beam_width=width))
    expected = brute_force_beams(model, prompt, width, steps)
    assert final.sequences == [generated for generated, _ in expected]
    assert final.scores == pytest.approx([score for _, score in expected], abs=1e-3)


def test_reorder_copies_rows_like_index_select() -> None:
    config = tiny_config(vocab_size=10, n_embd=8)
    cache = KVCache(config, 1, "cpu")
    generator = torch.Generator().manual_seed(0)
    for layer in cache.layers:
        layer.k.normal_(generator=generator)
        layer.v.normal_(generator=generator)
        layer.length = 6
    cache.reorder(torch.zeros(4, dtype=torch.long))  # one prompt row becomes four beams
    assert all(layer.k.size(0) == 4 for layer in cache.layers)
    for parents in ([0, 0, 1, 2], [3, 2, 1, 0], [0, 1, 2, 3], [1, 1, 1, 1]):
        for layer in cache.layers:
            layer.k[:, :, :6].normal_(generator=generator)
            layer.v[:, :, :6].normal_(generator=generator)
        before = [(layer.k[:, :, :6].clone(), layer.v[:, :, :6].clone())
                  for layer in cache.layers]
        cache.reorder(torch.tensor(parents))
        for (k, v), layer in zip(before, cache.layers):
            assert torch.equal(layer.k[:, :, :6], k[parents])
            assert torch.equal(layer.v[:, :, :6], v[parents])
