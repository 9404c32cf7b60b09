"""The model: both attention paths agree, the KV cache is exact, weights decay where they should."""

from __future__ import annotations

import pytest
import torch
from tiny_model import tiny_config

from chargpt_tui.errors import ConfigError
from chargpt_tui.kv_cache import KVCache
from chargpt_tui.model import (
    GPTConfig,
    GPTLanguageModel,
    convert_attention_weights,
    fused_copy,
    iter_decay_groups,
)


def twin_models(bias: bool) -> tuple[GPTLanguageModel, GPTLanguageModel]:
    """A per-head model and a fused model carrying exactly the same weights."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=12, n_layer=2, n_head=3, n_embd=24, bias=bias,
                       attention="heads")
    heads = GPTLanguageModel(config).eval()
    fused_config = GPTConfig(**{**config.to_dict(), "attention": "fused"})
    fused = GPTLanguageModel(fused_config).eval()
    fused.load_state_dict(convert_attention_weights(heads.state_dict(), config, "fused"))
    return heads, fused


@pytest.mark.parametrize("bias", [False, True])
def test_fused_attention_equals_the_per_head_modules(bias: bool) -> None:
    heads, fused = twin_models(bias)
    idx = torch.randint(0, 11, (3, 12))
    targets = torch.randint(0, 11, (3, 12))
    logits_h, loss_h = heads(idx, targets)
    logits_f, loss_f = fused(idx, targets)
    torch.testing.assert_close(logits_f, logits_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_f, loss_h)
    # Same function ⇒ same gradients for the shared parameters too.
    loss_h.backward()
    loss_f.backward()
    grads_h = convert_attention_weights(
        {n: p.grad for n, p in heads.named_parameters()}, heads.config, "fused")
    for name, param in fused.named_parameters():
        torch.testing.assert_close(param.grad, grads_h[name], atol=1e-5, rtol=1e-4)


def test_attention_maps_agree_and_are_causal_distributions() -> None:
    heads, fused = twin_models(bias=False)
    idx = torch.randint(0, 11, (1, 9))
    maps_h, maps_f = heads.attention_maps(idx), fused.attention_maps(idx)
    assert len(maps_f) == 2 and maps_f[0].shape == (3, 9, 9)
    for a, b in zip(maps_h, maps_f):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b.sum(-1), torch.ones(3, 9))
        assert torch.all(b.triu(diagonal=1) == 0)  # nobody attends to the future


def test_weight_layout_conversion_round_trips() -> None:
    heads, _ = twin_models(bias=True)
    state = heads.state_dict()
    fused = convert_attention_weights(state, heads.config, "fused")
    assert "blocks.0.sa.qkv.weight" in fused and fused["blocks.0.sa.qkv.weight"].shape == (72, 24)
    back = convert_attention_weights(fused, heads.config, "heads")
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(back[key], state[key])


def test_fused_copy_of_a_heads_model_samples_the_same_function() -> None:
    heads, fused = twin_models(bias=False)
    copy = fused_copy(heads)
    assert copy.config.attention == "fused" and not copy.training
    idx = torch.randint(0, 11, (2, 12))
    torch.testing.assert_close(copy(idx)[0], fused(idx)[0])
    assert not any(p.requires_grad for p in copy.parameters())


def test_kv_cache_gives_the_full_forward_logits_at_every_position() -> None:
    _, model = twin_models(bias=True)
    idx = torch.randint(0, 11, (2, 12))
    full, _ = model(idx)
    cache = KVCache(model.config, batch_size=2, device="cpu")
    prefill = model.forward_cached(idx[:, :5], cache)
    torch.testing.assert_close(prefill, full[:, 4], atol=1e-5, rtol=1e-5)
    for t in range(5, 12):
        step = model.forward_cached(idx[:, t : t + 1], cache)
        torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)
    assert cache.length == 12
    with pytest.raises(ValueError, match="block_size"):
        model.forward_cached(idx[:, :1], cache)  # a 13th position does not exist


def test_decay_applies_to_matrices_but_not_embeddings_norms_or_biases() -> None:
    model = GPTLanguageModel(tiny_config(vocab_size=5, block_size=4, n_layer=1, n_head=1,
                                         n_embd=8, bias=True))
    decay = dict(iter_decay_groups(model))
    assert decay["blocks.0.sa.qkv.weight"] and decay["lm_head.weight"]
    assert not decay["token_embedding_table.weight"]
    assert not decay["position_embedding_table.weight"]
    assert not decay["blocks.0.ln1.weight"] and not decay["blocks.0.sa.qkv.bias"]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(n_embd=130, n_head=4), "not divisible"),
    (dict(n_layer=0), "n-layer must be at least 1"),
    (dict(dropout=1.5), "dropout"),
    (dict(attention="sparse"), "attention must be one of"),
])
def test_config_rejects_impossible_shapes(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GPTConfig(**kwargs)
