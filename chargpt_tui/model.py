"""The GPT itself, after Karpathy's "Let's build GPT" lecture and nanoGPT's ``model.py``.

Two attention paths compute the same function with the same parameters:

* the *educational* path — one :class:`Head` module per head, each with its own key/query/value
  projections and an explicit causal mask, concatenated by :class:`MultiHeadAttention`;
* the *fused* path — :class:`CausalSelfAttention`, one matrix multiply for Q, K and V of all heads
  and PyTorch's ``scaled_dot_product_attention`` (flash attention on GPUs).

:func:`convert_attention_weights` maps one layout onto the other; the tests prove both paths give
the same outputs. Training defaults to the fused path; sampling always uses it (with a KV cache).
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

ATTENTION_KINDS = ("fused", "heads")


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64  # the longest context the model ever sees (positions 0..block_size-1)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in Linear/LayerNorm: nanoGPT found them unneeded, and slower
    attention: str = "fused"  # "fused" (fast) or "heads" (the lecture's per-head modules)

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

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, int | float | bool | str]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# The educational path: attention one head at a time.


class Head(nn.Module):
    """One head of causal self-attention.

    Every position emits a query ("what am I looking for?") and a key ("what do I contain?");
    their dot products say how much each position attends to every earlier one, and the output
    is the attention-weighted sum of the positions' values.
    """

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


# --------------------------------------------------------------------------------------------
# The fast path: all heads in one batched computation, same parameters rearranged.


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention in a few large operations.

    ``qkv`` stacks every head's query, key and value projection into one matrix (rows: all
    queries, then all keys, then all values, head by head), so one matmul replaces 3 × n_head.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout_p = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, kv: LayerKV | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size): heads become a batch dimension.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv is not None:
            # Decoding: keys/values of earlier positions come from the cache, not recomputation.
            # A multi-token call (prefill) must start from an empty cache so the causal mask
            # below lines up; one-token calls attend to everything cached.
            if T > 1 and kv.length:
                raise ValueError("prefill must start from an empty KV cache")
            k, v = kv.append(k, v)
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(k.size(2) - T)
            weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            y = self.dropout(weights) @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout_p if self.training else 0.0, is_causal=T > 1
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads side by side
        return self.dropout(self.proj(y)), weights


class LayerKV:
    """One layer's cached keys and values, (batch, n_head, block_size, head_size), in order."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.size(2)
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size.

    Positions are absolute (learned position embeddings), so the cache can hold at most
    ``block_size`` tokens; what happens past that is the sampler's policy (see sampling.py).
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (batch_size, config.n_head, config.block_size, config.head_size)
        self.layers = [
            LayerKV(torch.empty(shape, device=device, dtype=dtype),
                    torch.empty(shape, device=device, dtype=dtype))
            for _ in range(config.n_layer)
        ]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = 0

    def reorder(self, parents: torch.Tensor) -> None:
        """Beam search: row ``i`` of the cache becomes a copy of row ``parents[i]``.

        ``parents`` may change the number of rows (the first step turns the prompt's one row
        into ``beam_width``). After that, only rows whose parent is another row are copied, and
        only their filled positions: a beam that extends itself keeps its keys and values.
        """
        rows = self.layers[0].k.size(0)
        if len(parents) != rows:
            for layer in self.layers:
                layer.k = layer.k.index_select(0, parents)
                layer.v = layer.v.index_select(0, parents)
            return
        moved = (parents != torch.arange(rows, device=parents.device)).nonzero().flatten()
        if len(moved) == 0:
            return
        sources = parents[moved]
        for layer in self.layers:
            filled = slice(0, layer.length)
            # The right-hand side is gathered into a new tensor first, so rows may swap.
            layer.k[moved, :, filled] = layer.k[sources, :, filled]
            layer.v[moved, :, filled] = layer.v[sources, :, filled]


# --------------------------------------------------------------------------------------------
# The rest of the transformer.


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


class GPTLanguageModel(nn.Module):
    """Token + position embeddings → blocks → final LayerNorm → logits over the vocabulary."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
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
        T = idx.size(1)
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        return self.drop(self.token_embedding_table(idx) + self.position_embedding_table(pos))

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
        x = self._embed(idx, start=cache.length)
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
            _, h, name, kind = rest.split(".")
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
