"""The GPT of Karpathy's "Let's build GPT" lecture, in the lecture's order, then its fast path.

The lecture's model: :class:`Head` (one head of self-attention), :class:`MultiHeadAttention`,
:class:`FeedForward`, :class:`Block`, and :class:`GPTLanguageModel` with its :class:`GPTConfig`.

The fast path computes the same function with the same parameters: :class:`CausalSelfAttention`
runs every head in one matrix multiply and PyTorch's ``scaled_dot_product_attention`` (flash
attention on GPUs); :func:`convert_attention_weights` maps one layout onto the other, and the
tests prove both give the same outputs. Training uses it by default, sampling always (with the
KV cache of ``kv_cache.py``). It also holds the fast recipe's parts, each one config field and off
by default (docs/recipe.md): rotary positions (:class:`Rotary`) and QK-norm.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from chargpt_tui.errors import ConfigError
from chargpt_tui.kv_cache import KVCache, LayerKV

# --------------------------------------------------------------------------------------------
# The lecture's model.


class Head(nn.Module):
    """One head of causal self-attention.

    Every position emits a query ("what am I looking for?") and a key ("what do I contain?");
    their dot products say how much each position attends to every earlier one, and the output
    is the attention-weighted sum of the positions' values.
    """

    tril: torch.Tensor

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.head_size = config.head_size
        self.key = nn.Linear(config.n_embd, self.head_size, bias=config.bias)
        self.query = nn.Linear(config.n_embd, self.head_size, bias=config.bias)
        self.value = nn.Linear(config.n_embd, self.head_size, bias=config.bias)
        # Lower-triangular mask: position t may only look at positions <= t (no peeking ahead).
        # Not persistent: it is derived from block_size, so checkpoints need not carry it.
        mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("tril", mask, persistent=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, T, _ = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)  # each (B, T, head_size)
        # Scale by 1/sqrt(head_size) so the softmax does not saturate as head_size grows.
        scores = q @ k.transpose(-2, -1) * self.head_size**-0.5  # (B, T, T)
        scores = scores.masked_fill(~self.tril[:T, :T], float("-inf"))
        weights = F.softmax(scores, dim=-1)
        out = self.dropout(weights) @ v  # (B, T, head_size)
        return out, weights


class MultiHeadAttention(nn.Module):
    """Several heads in parallel, their outputs concatenated and projected back to n_embd."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.heads = nn.ModuleList(Head(config) for _ in range(config.n_head))
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, kv: LayerKV | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if kv is not None:
            raise ConfigError("the KV cache needs the fused attention path")
        outs, weights = zip(*(head(x) for head in self.heads))
        y = self.dropout(self.proj(torch.cat(outs, dim=-1)))
        return y, torch.stack(weights, dim=1) if need_weights else None


class FeedForward(nn.Module):
    """Per-position MLP: where each token "thinks" about what attention gathered for it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias),  # 4x wider, as in GPT
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Transformer block: communication (attention) then computation (feed-forward).

    Pre-LayerNorm with residual connections: ``x + f(ln(x))`` keeps a clean gradient path from
    the loss to every layer, which is what lets deep stacks train.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        fused = config.attention == "fused"
        self.sa = CausalSelfAttention(config) if fused else MultiHeadAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.ffwd = FeedForward(config)

    def forward(
        self, x: torch.Tensor, kv: LayerKV | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.sa(self.ln1(x), kv, need_weights)
        x = x + attended
        x = x + self.ffwd(self.ln2(x))
        return x, weights


ATTENTION_KINDS = ("fused", "heads")


@dataclass
class GPTConfig:
    """The model's shape and parts; the defaults of the parts are the lecture's model."""

    vocab_size: int = 65
    block_size: int = 64  # the longest context the model ever sees (positions 0..block_size-1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear/LayerNorm: nanoGPT found them unneeded, and slower
    attention: str = "fused"  # "fused" (fast) or "heads" (the lecture's per-head modules)
    # -- the fast recipe's parts (what each is worth: docs/recipe.md) --
    rope: bool = False  # rotary positions, not a learned table: attention sees distances
    qk_norm: bool = False  # normalise queries and keys per head: bounded logits, stable at high lr

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n-embd {self.n_embd} is not divisible by n-head {self.n_head}",
                "pick sizes where n-embd / n-head is a whole number (e.g. 128 / 4)",
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} is outside [0, 1)")
        if self.attention not in ATTENTION_KINDS:
            raise ConfigError(f"attention must be one of {ATTENTION_KINDS}")
        if self.attention == "heads" and (self.rope or self.qk_norm):
            raise ConfigError("the per-head lecture path has learned positions and no QK-norm",
                              "use --attention fused with the fast recipe (or --recipe lecture)")
        if self.rope and self.head_size % 2:
            raise ConfigError(f"rotary positions need an even head size, not {self.head_size}",
                              "pick n-embd / n-head even (e.g. 128 / 4)")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, int | float | bool | str]:
        return asdict(self)


class GPTLanguageModel(nn.Module):
    """Token + position embeddings → blocks → final LayerNorm → logits over the vocabulary."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
        if not config.rope:  # rotary models get their positions inside attention
            self.position_embedding_table = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections that write into the residual stream by
        # 1/sqrt(2 * n_layer), so the stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith(("proj.weight", "net.2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        tokens = self.token_embedding_table(idx)
        if self.config.rope:  # positions enter as rotations inside attention
            return self.drop(tokens)
        T = idx.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        return self.drop(tokens + self.position_embedding_table(pos))

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position; with ``targets``, also the mean cross-entropy loss."""
        x = self._embed(idx)
        for block in self.blocks:
            x, _ = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def forward_cached(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits of the *last* position only, feeding new tokens through a KV cache.

        ``idx`` holds only the tokens the cache has not seen yet (the whole prompt for prefill,
        then one token per step). Each step costs O(T) instead of re-running O(T²) attention.
        """
        x = self._embed(idx, start=cache.seen)
        for block, kv in zip(self.blocks, cache.layers):
            x, _ = block(x, kv)
        return self.lm_head(self.ln_f(x[:, -1, :]))

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for one sequence: a list of (n_head, T, T) tensors."""
        x = self._embed(idx[:, -self.config.block_size :])
        maps = []
        for block in self.blocks:
            x, weights = block(x, need_weights=True)
            maps.append(weights[0])
        return maps


# --------------------------------------------------------------------------------------------
# The fast path: all heads in one batched computation, same parameters rearranged; and the fast
# recipe's parts, rotary positions and QK-norm.


class Rotary(nn.Module):
    """Rotary position embedding (RoPE): rotate queries and keys by their position.

    Each pair of channels (x₁, x₂) turns by an angle ``position × frequency`` (one frequency per
    pair, from fast to slow). A rotated query at i dotted with a rotated key at j depends only on
    ``i − j``: attention sees *distances*, not absolute places. So no position table is learned,
    and a KV cache can slide past ``block_size`` (cached keys stay valid as the window moves).
    """

    inv_freq: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_size: int, block_size: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        cos, sin = self._angles(0, block_size, inv_freq)
        # The training positions 0..block_size-1, precomputed (fewer operations per step).
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def _angles(start: int, length: int, inv_freq: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(start, start + length, dtype=torch.float32,
                                 device=inv_freq.device)
        angles = torch.outer(positions, inv_freq)  # (T, head_size / 2)
        return angles.cos(), angles.sin()

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``x``: (B, T, heads, head_size) at positions start..start+T-1."""
        T = x.size(1)
        if start + T <= self.cos.size(0):
            cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        else:  # generation past the block: positions the table does not hold
            cos, sin = self._angles(start, T, self.inv_freq)
        cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # broadcast over heads
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def attention_mask(queries: int, keys: int, window: int, device: torch.device) -> torch.Tensor:
    """Which keys each query may see: no later position, and none ``window`` or more back.

    The last ``queries`` of ``keys`` positions are the queries. Inside the block the window never
    bites (plain causal mask); past it, a rotary model attends within a sliding window.
    """
    query_pos = torch.arange(keys - queries, keys, device=device)[:, None]
    key_pos = torch.arange(keys, device=device)[None, :]
    return (key_pos <= query_pos) & (query_pos - key_pos < window)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention in a few large operations.

    ``qkv`` stacks every head's query, key and value projection into one matrix (rows: all
    queries, then all keys, then all values, head by head), so one matmul replaces 3 × n_head.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.block_size = config.block_size
        self.dropout_p = config.dropout
        self.qk_norm = config.qk_norm
        self.rotary = Rotary(config.head_size, config.block_size) if config.rope else None
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, kv: LayerKV | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        head_size = C // self.n_head
        # Queries and keys of all heads side by side (one normalisation, one rotation), then values.
        qk, v = self.qkv(x).view(B, T, 3 * self.n_head, head_size).split(2 * self.n_head, dim=2)
        if self.qk_norm:  # zero mean, unit variance per head (LayerNorm's fused kernel)
            qk = F.layer_norm(qk, (head_size,))
        if self.rotary is not None:
            qk = self.rotary(qk, kv.seen if kv is not None else 0)
        # (B, T, heads, head_size) -> (B, heads, T, head_size): heads become a batch dimension.
        q, k = qk.transpose(1, 2).split(self.n_head, dim=1)
        v = v.transpose(1, 2)
        if kv is not None:
            # Decoding: keys/values of earlier positions come from the cache, not recomputation.
            # A multi-token call (prefill) must start from an empty cache so the causal mask
            # below lines up; one-token calls attend to everything cached.
            if T > 1 and kv.length:
                raise ValueError("prefill must start from an empty KV cache")
            k, v = kv.append(k, v)
        # Only a rotary model runs more than block_size positions at once: then the window bites.
        mask = (attention_mask(T, k.size(2), self.block_size, x.device)
                if T > 1 and (need_weights or k.size(2) > self.block_size) else None)
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            weights = F.softmax(scores.masked_fill(~mask, float("-inf")) if mask is not None
                                else scores, dim=-1)
            y = self.dropout(weights) @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0,
                is_causal=T > 1 and mask is None,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.dropout(self.proj(y)), weights


def convert_attention_weights(state: dict[str, torch.Tensor], config: GPTConfig,
                              to: str) -> dict[str, torch.Tensor]:
    """Rewrite a state dict between the per-head layout and the fused QKV layout.

    Fused ``qkv.weight`` rows are [all queries | all keys | all values], each block ordered by
    head; head ``h`` owns rows ``h*head_size:(h+1)*head_size`` of each block.
    """
    if to not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention layout {to!r}")
    hs, nh = config.head_size, config.n_head
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        prefix, _, rest = key.partition(".sa.")
        if not rest:
            out[key] = tensor
        elif rest.startswith("qkv.") and to == "heads":
            kind = rest.split(".", 1)[1]  # weight or bias
            for part, name in enumerate(("query", "key", "value")):
                chunk = tensor.split(config.n_embd, dim=0)[part]
                for h in range(nh):
                    out[f"{prefix}.sa.heads.{h}.{name}.{kind}"] = chunk[h * hs : (h + 1) * hs]
        elif rest.startswith("heads.") and to == "fused":
            kind = rest.rsplit(".", 1)[1]  # heads.<h>.<query|key|value>.<weight|bias>
            fused_key = f"{prefix}.sa.qkv.{kind}"
            if fused_key not in out:
                out[fused_key] = torch.cat(
                    [state[f"{prefix}.sa.heads.{i}.{n}.{kind}"]
                     for n in ("query", "key", "value") for i in range(nh)], dim=0)
        else:
            out[key] = tensor
    return out


def fused_copy(model: GPTLanguageModel) -> GPTLanguageModel:
    """A fused-attention copy of ``model`` (same weights), in eval mode, on the same device.

    Used for sampling: a snapshot that training can keep updating without disturbing, and that
    supports the KV cache whichever attention path training uses.
    """
    source = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    if source.config.attention == "fused":
        copy = deepcopy(source)  # a plain memory copy: much faster than building a new model
    else:
        config = GPTConfig(**{**source.config.to_dict(), "attention": "fused"})
        state = convert_attention_weights(source.state_dict(), source.config, "fused")
        copy = GPTLanguageModel(config).to(next(source.parameters()).device)
        copy.load_state_dict(state)
    copy.requires_grad_(False)
    for param in copy.parameters():
        param.grad = None
    return copy.eval()


def iter_decay_groups(model: nn.Module) -> Iterator[tuple[str, bool]]:
    """(parameter name, whether it gets weight decay): matrices of Linear layers do; biases,
    LayerNorm gains and embeddings don't (decaying them only hurts)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for name, param in model.named_parameters():
        yield name, param.dim() >= 2 and id(param) not in embeddings
