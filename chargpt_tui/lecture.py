"""The lecture's models in the order it builds them: one small class per idea ("rung").

"Let's build GPT: from scratch, in code, spelled out" grows a bigram lookup table into a
Transformer one idea at a time, and reports the validation loss after each. Each class below is
the lecture's model at that point, layer for layer (karpathy/ng-video-lecture, ``bigram.py``,
``gpt.py`` and the video), so its parameter count is the lecture's too:

=============  ============================================================  ==========
rung           what it adds                                                  lecture val
=============  ============================================================  ==========
bigram         a token → next-token logit table (V × V)                      2.49
one-head       token + position embeddings (32 wide), one attention head     2.40
multi-head     4 heads of size 8, concatenated                               2.28
feedforward    a per-position Linear + ReLU after attention                  2.24
residual       3 blocks, residual connections, projections, a 4× MLP         2.08
layernorm      pre-norm LayerNorm in every block and before the head         2.06
scaled         6 layers × 6 heads × 384 wide, block 256, dropout 0.2         1.48
=============  ============================================================  ==========

The last rung is the project's own :class:`~chargpt_tui.model.GPTLanguageModel` (the lecture
recipe): the ladder ends where the rest of chargpt-tui starts.

Two deliberate differences from the lecture's code, both small:

* attention scores are scaled by ``1/sqrt(head_size)``, as the lecture *explains* it (its code
  divides by ``sqrt(n_embd)``, which equals it for one head of 32 but not for 4 heads of 8);
  :class:`~chargpt_tui.model.Head` is reused as it is;
* the trainer decays only weight matrices (not embeddings, biases or LayerNorm gains), with the
  lecture's rate of 0.01 (``torch.optim.AdamW``'s default, which the lecture used on all).

:class:`Heads` runs its heads in one pass when nothing asks for their attention weights (the
same parameters and function, tested equal to the loop over :class:`Head` modules): at these
sizes launching a dozen small ops per head cost more than computing them.

Every rung model has what the trainer, the checkpoints and the samplers use of a
``GPTLanguageModel``: ``config`` (a :class:`~chargpt_tui.model.GPTConfig` whose unused fields
keep their defaults), ``forward(idx, targets) -> (logits, loss)``, ``num_parameters()``,
``token_embedding_table`` and ``attention_maps``. It has no KV cache (``forward_cached``): the
samplers re-run the context window for every character, as the lecture's ``generate`` does.
A checkpoint names its rung (``"rung"``), so :func:`build_model` can rebuild it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn
from torch.nn import functional as F

from chargpt_tui.errors import ConfigError
from chargpt_tui.model import GPTConfig, GPTLanguageModel, Head

# --------------------------------------------------------------------------------------------
# Building blocks where the lecture differs from the project's (model.py): ReLU instead of
# GELU, biases in every Linear but the key/query/value ones, attention without a projection until
# the residual rung.


class Heads(nn.Module):
    """Several :class:`Head` modules side by side, their outputs concatenated.

    ``project=False`` is the multi-head rung (concatenation only); the residual rung adds a
    projection back into the residual stream (``project=True``, with a bias as in the lecture).
    """

    def __init__(self, config: GPTConfig, project: bool = False) -> None:
        super().__init__()
        self.heads = nn.ModuleList(Head(config) for _ in range(config.n_head))
        self.proj = nn.Linear(config.n_embd, config.n_embd) if project else None
        self.one_pass = config.attention == "fused"  # see all_heads_at_once

    def forward(self, x: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        weights = None  # (B, n_head, T, T): only the attention views ask for them
        if self.one_pass and not need_weights:
            out = self.all_heads_at_once(x)
        else:
            outs, per_head = zip(*(head(x) for head in self.heads))
            out = torch.cat(outs, dim=-1)  # (B, T, n_head * head_size) = (B, T, n_embd)
            weights = torch.stack(per_head, dim=1)
        if self.proj is not None:
            out = self.proj(out)
        return out, weights

    def all_heads_at_once(self, x: torch.Tensor) -> torch.Tensor:
        """The same heads, the same parameters, as one computation: every head's query, key and
        value weights stacked into one matrix, and PyTorch's fused causal attention. At these
        sizes each small operation costs more to launch than to run, and this does a few instead
        of a dozen per head: the residual rung trains ~1.5× faster (docs/lecture.md). The tests
        prove it equal to the loop over :class:`Head` modules."""
        B, T, C = x.shape
        heads = cast(list[Head], list(self.heads))
        n_head, head_size = len(heads), heads[0].head_size
        stacked = torch.cat([torch.cat([h.query.weight, h.key.weight, h.value.weight])
                             for h in heads])  # (n_head * 3 * head_size, C)
        q, k, v = F.linear(x, stacked).view(B, T, n_head, 3, head_size).permute(3, 0, 2, 1, 4)
        dropout = heads[0].dropout.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True,
                                             scale=head_size**-0.5)  # (B, n_head, T, head_size)
        return out.transpose(1, 2).reshape(B, T, n_head * head_size)


class ReLUFeedForward(nn.Module):
    """The lecture's per-position MLP: ``Linear → ReLU`` at first, ``Linear(4×) → ReLU →
    Linear`` once residual connections need it to project back to ``n_embd``."""

    def __init__(self, n_embd: int, widen: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = ([nn.Linear(n_embd, 4 * n_embd), nn.ReLU(),
                                    nn.Linear(4 * n_embd, n_embd)] if widen
                                   else [nn.Linear(n_embd, n_embd), nn.ReLU()])
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LectureBlock(nn.Module):
    """Communication then computation, each added to the residual stream:
    ``x + sa(norm(x))`` then ``x + ffwd(norm(x))``; the norms are identities until the
    layernorm rung."""

    def __init__(self, config: GPTConfig, layer_norm: bool) -> None:
        super().__init__()
        self.ln1: nn.Module = nn.LayerNorm(config.n_embd) if layer_norm else nn.Identity()
        self.sa = Heads(config, project=True)
        self.ln2: nn.Module = nn.LayerNorm(config.n_embd) if layer_norm else nn.Identity()
        self.ffwd = ReLUFeedForward(config.n_embd, widen=True)

    def forward(self, x: torch.Tensor, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.sa(self.ln1(x), need_weights)
        x = x + attended
        x = x + self.ffwd(self.ln2(x))
        return x, weights


# --------------------------------------------------------------------------------------------
# The rungs.


class LectureModel(nn.Module):
    """What every rung shares: the loss, the parameter count, no attention maps by default."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def logits(self, idx: torch.Tensor, need_weights: bool = False
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, T) token ids → (B, T, vocab_size) logits and, with ``need_weights``, each
        attention layer's weights (else an empty list)."""
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, _ = self.logits(idx)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for one sequence: (n_head, T, T) each."""
        _, weights = self.logits(idx[:, -self.config.block_size:], need_weights=True)
        return [w[0] for w in weights]


class BigramLanguageModel(LectureModel):
    """Rung 1. Each character reads the logits for the next one off a row of a V × V table.

    No context at all: the best it can learn is how often each character follows each other.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.vocab_size)

    def logits(self, idx: torch.Tensor, need_weights: bool = False
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.token_embedding_table(idx), []


class EmbeddedModel(LectureModel):
    """Token and position embeddings in, a linear head out; subclasses fill the middle."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
        # Attention sees a set of vectors: the position table is how it knows their order.
        self.position_embedding_table = nn.Embedding(config.block_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.size(1), device=idx.device)
        return self.token_embedding_table(idx) + self.position_embedding_table(positions)


class OneHeadModel(EmbeddedModel):
    """Rung 2. One self-attention head (size 32 over 32 channels): each position gathers
    information from earlier ones, weighted by how well their keys match its query."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.sa_head = Head(config)  # config.n_head == 1: head_size == n_embd

    def logits(self, idx: torch.Tensor, need_weights: bool = False
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, weights = self.sa_head(self.embed(idx))
        return self.lm_head(x), [weights[:, None]]


class MultiHeadModel(EmbeddedModel):
    """Rung 3. Four heads of size 8 in parallel: four smaller questions asked at once."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.sa_heads = Heads(config)

    def logits(self, idx: torch.Tensor, need_weights: bool = False
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, weights = self.sa_heads(self.embed(idx), need_weights)
        return self.lm_head(x), [] if weights is None else [weights]


class FeedForwardModel(EmbeddedModel):
    """Rung 4. After attention gathers, a per-position Linear + ReLU "thinks" about it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.sa_heads = Heads(config)
        self.ffwd = ReLUFeedForward(config.n_embd, widen=False)

    def logits(self, idx: torch.Tensor, need_weights: bool = False
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, weights = self.sa_heads(self.embed(idx), need_weights)
        return self.lm_head(self.ffwd(x)), [] if weights is None else [weights]


class BlocksModel(EmbeddedModel):
    """Rungs 5 and 6. ``n_layer`` blocks on a residual stream (5: residual), then with
    pre-norm LayerNorm in each block and once more before the head (6: layernorm)."""

    def __init__(self, config: GPTConfig, layer_norm: bool) -> None:
        super().__init__(config)
        self.blocks = nn.ModuleList(LectureBlock(config, layer_norm)
                                    for _ in range(config.n_layer))
        self.ln_f: nn.Module = nn.LayerNorm(config.n_embd) if layer_norm else nn.Identity()

    def logits(self, idx: torch.Tensor, need_weights: bool = False
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.embed(idx)
        maps = []
        for block in self.blocks:
            x, weights = block(x, need_weights)
            if weights is not None:
                maps.append(weights)
        return self.lm_head(self.ln_f(x)), maps


class ResidualModel(BlocksModel):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config, layer_norm=False)


class LayerNormModel(BlocksModel):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config, layer_norm=True)


# --------------------------------------------------------------------------------------------
# The ladder: each rung's model, shape and training settings (bigram.py / gpt.py's constants).


@dataclass(frozen=True)
class Rung:
    name: str
    adds: str  # what this rung adds, in a few words (the table's second column)
    model: type[nn.Module]
    lecture_val_loss: float  # what the lecture reports
    n_layer: int = 1
    n_head: int = 1
    n_embd: int = 32
    block_size: int = 8
    dropout: float = 0.0
    batch_size: int = 32
    learning_rate: float = 1e-3
    max_iters: int = 5000
    eval_interval: int = 500
    eval_iters: int = 200

    def model_config(self, vocab_size: int) -> GPTConfig:
        # The bigram's "embedding" is a row of logits: as wide as the vocabulary.
        n_embd = vocab_size if self.model is BigramLanguageModel else self.n_embd
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=n_embd, dropout=self.dropout)


RUNGS: tuple[Rung, ...] = (
    Rung("bigram", "a token → next-token logit table", BigramLanguageModel, 2.49,
         learning_rate=1e-2, max_iters=3000, eval_interval=300),
    Rung("one-head", "position embeddings, one attention head of 32", OneHeadModel, 2.40),
    Rung("multi-head", "4 heads of 8, concatenated", MultiHeadModel, 2.28, n_head=4),
    Rung("feedforward", "a per-position Linear + ReLU", FeedForwardModel, 2.24, n_head=4),
    Rung("residual", "3 blocks, residual paths, projections, 4× MLP", ResidualModel, 2.08,
         n_layer=3, n_head=4),
    Rung("layernorm", "pre-norm LayerNorm, a final LayerNorm", LayerNormModel, 2.06,
         n_layer=3, n_head=4),
    Rung("scaled", "6 layers × 6 heads × 384, block 256, dropout 0.2", GPTLanguageModel, 1.48,
         n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64,
         learning_rate=3e-4),
)
RUNG_NAMES = tuple(rung.name for rung in RUNGS)
LECTURE_RUNGS = {rung.name: rung for rung in RUNGS}


def rung_named(name: str) -> Rung:
    if name not in LECTURE_RUNGS:
        raise ConfigError(f"unknown rung {name!r}", f"choose one of: {', '.join(RUNG_NAMES)}")
    return LECTURE_RUNGS[name]


def build_model(config: GPTConfig, rung: str | None = None) -> GPTLanguageModel:
    """The model a run trains: the project's GPT, or the named rung's lecture model.

    Typed as :class:`GPTLanguageModel` because a rung model offers the part of its interface
    that training, checkpoints, sampling and explaining use (see the module docstring).
    """
    model_class = GPTLanguageModel if rung is None else rung_named(rung).model
    if model_class is GPTLanguageModel:
        return GPTLanguageModel(config)
    return cast(GPTLanguageModel, model_class(config))
