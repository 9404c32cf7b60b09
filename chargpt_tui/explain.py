"""See what the model learned: attention over a text, surprise per character, embeddings, curves.

Pure engine code (torch only, no UI): the app's views and ``chargpt-tui explain`` both draw what
these functions return. Every function takes an eval-mode model and works for any recipe the
engine builds, because it only uses the model's public surface: ``forward`` (logits),
``attention_maps`` (one (heads, T, T) tensor per layer) and ``token_embedding_table``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from chargpt_tui.errors import UserError
from chargpt_tui.events import EvalDone, StepDone
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.runs import METRICS_NAME, read_metrics
from chargpt_tui.tokenizer import CharTokenizer

# -- attention over a text -------------------------------------------------------------------


@dataclass(frozen=True)
class TextAttention:
    """Every layer's and head's attention over one text.

    ``maps[layer][head, q, k]`` is how much the character at position ``q`` (the one reading,
    the *query*) takes from the character at position ``k`` (the one read, the *key*). Only
    ``k <= q`` can be non-zero (the causal mask: no peeking at the future) and each row sums
    to 1 (a softmax): attention is a budget of 1 that every character spends on its past.
    """

    chars: str
    maps: list[torch.Tensor]  # per layer: (n_head, T, T), float32 on the CPU
    # The text before ``chars`` when it was longer than the context: the model no longer sees
    # it (e.g. a prompt whose answer ran past ``block_size``), but a reader still wants it.
    before: str = ""

    @property
    def n_layer(self) -> int:
        return len(self.maps)

    @property
    def n_head(self) -> int:
        return self.maps[0].size(0)

    def row(self, layer: int, head: int | None, query: int) -> list[float]:
        """What the character at ``query`` attends to: one weight per position up to it.

        ``head=None`` is the mean of the layer's heads: what the layer as a whole gathers
        (each head's output is mixed in with equal rights by the output projection).
        """
        grid = self.maps[layer].mean(0) if head is None else self.maps[layer][head]
        return grid[query, : query + 1].tolist()


def attention_over(model: GPTLanguageModel, tokenizer: CharTokenizer, ids: list[int]
                   ) -> TextAttention:
    """Attention of the model over ``ids`` (its last ``block_size`` characters, the most the
    model can look at at once; the characters before them are kept as ``before``)."""
    cut = max(0, len(ids) - model.config.block_size)
    window = ids[cut:]
    device = next(model.parameters()).device
    maps = model.attention_maps(torch.tensor([window], device=device))
    if not maps:  # the lecture's bigram: a table read by the last character alone
        raise UserError("this model has no attention (the lecture's bigram looks only at the "
                        "last character): nothing to show here — its surprise and embeddings "
                        "views apply")
    return TextAttention(tokenizer.decode(window), [layer.float().cpu() for layer in maps],
                         tokenizer.decode(ids[:cut]))


def mean_look_back(grid: torch.Tensor) -> float:
    """How many characters back a head looks, on average over the text's positions.

    About 1: a *previous-character* head (it copies what came just before); large: a head that
    reaches far back (to the speaker's name, the start of the line).
    """
    T = grid.size(-1)
    distance = (torch.arange(T).view(T, 1) - torch.arange(T).view(1, T)).clamp(min=0)
    return float((grid * distance).sum(-1).mean())


# Shades for drawing weights. 16 colours: characters from blank to full block. 256 colours: a
# ramp of background colours from dark to bright yellow (xterm palette numbers).
SHADE_CHARS = " ░▒▓█"
SHADE_256 = (235, 236, 58, 94, 100, 136, 142, 178, 184, 220, 226)
FAINTEST = 0.01  # weights below this are drawn blank


def shade_level(weight: float, levels: int) -> int:
    """``weight`` (0..1) as one of ``levels`` shades, on a log scale from :data:`FAINTEST`
    (level 1) to 1 (the last level); 0 below it.

    A log scale because attention weights span orders of magnitude: over a long text a weight
    of 0.05 already stands out, and a row spread evenly over 200 characters (0.005 each) is
    honestly drawn as nearly blank — it looks everywhere and nowhere in particular.
    """
    if weight < FAINTEST:
        return 0
    position = math.log(weight / FAINTEST) / math.log(1 / FAINTEST)  # 0..1
    return max(1, min(levels - 1, math.ceil(position * (levels - 1))))


def shade_bounds(levels: int) -> list[float]:
    """The smallest weight drawn at each level 1..levels-1 (for legends)."""
    return [FAINTEST ** (1 - (level - 1) / (levels - 1)) for level in range(1, levels)]


def shade_char(weight: float) -> str:
    return SHADE_CHARS[shade_level(weight, len(SHADE_CHARS))]


# -- surprise per character ------------------------------------------------------------------


@dataclass(frozen=True)
class Surprise:
    """The model's loss on each character of a text and what it expected instead.

    ``nats[t]`` is ``-ln p(char t | the characters before it)``: 0 when the model was certain
    and right, ln(vocab_size) when it guessed uniformly, more when it was sure of something
    else. The first character has no context to be predicted from: ``None``.
    """

    chars: str
    nats: list[float | None]
    guesses: list[list[tuple[str, float]]]  # per position: the top-k (char, probability)
    context: int  # characters before each scored one that the model saw, at least (after
    # the first window, where it sees all of them)

    @property
    def bits(self) -> list[float | None]:
        return [None if n is None else n / math.log(2) for n in self.nats]

    @property
    def mean_nats(self) -> float:
        """The mean loss over the scored characters: the number training curves show."""
        scored = [n for n in self.nats if n is not None]
        return sum(scored) / len(scored) if scored else float("nan")


# A rotary model reads a text of any length in one forward (its attention keeps to a sliding
# window); its cost grows with the square of the length, so past this many characters the
# windowed protocol takes over.
ROTARY_FULL_FORWARD_CHARS = 2048


@torch.no_grad()
def surprise(model: GPTLanguageModel, tokenizer: CharTokenizer, ids: list[int],
             stride: int | None = None, top_k: int = 5) -> Surprise:
    """Per-character loss of ``ids``, longer than the context if need be.

    Each model is scored by its own definition past the context. A rotary model (``rope``)
    defines it: one forward over the whole text, each position attending to the
    ``block_size`` positions up to it — what it was trained and samples with, and what
    ``F.cross_entropy`` of that forward gives (texts up to :data:`ROTARY_FULL_FORWARD_CHARS`;
    ``stride`` does not apply to them).

    Learned positions stop at ``block_size``, so for them (and for longer rotary texts) the
    usual sliding-window perplexity protocol: windows of ``block_size`` characters start every
    ``stride`` characters (default half a block); each window scores only the characters no
    earlier window scored, i.e. its last ``stride``. So every character after the first window
    is predicted from at least ``block_size - stride + 1`` characters of context — a smaller
    stride gives more context and costs more forward passes (``stride=1`` gives every character
    the full context, one pass per character).
    """
    block = model.config.block_size
    device = next(model.parameters()).device
    nats: list[float | None] = [None] * len(ids)
    guesses: list[list[tuple[str, float]]] = [[] for _ in ids]
    if model.config.rope and len(ids) <= ROTARY_FULL_FORWARD_CHARS:
        window = stride = len(ids)  # one window, the whole text
        context = block  # every character past the first block sees a whole block
    else:
        window, stride = block, max(1, min(stride or block // 2, block))
        context = block - stride + 1
    scored_until, start = 1, 0  # position 0 has nothing before it to be predicted from
    while scored_until < len(ids):
        # The window's inputs; its logits at i predict the character at start + i + 1.
        end = min(start + window, len(ids) - 1)
        logits, _ = model(torch.tensor([ids[start:end]], device=device))
        rows = torch.arange(scored_until - start - 1, end - start, device=device)
        log_probs = F.log_softmax(logits[0, rows].float(), dim=-1)
        targets = torch.tensor(ids[scored_until:end + 1], device=device)
        losses = -log_probs.gather(1, targets.view(-1, 1)).squeeze(1)
        top = log_probs.exp().topk(min(top_k, log_probs.size(-1)), dim=-1)
        for offset, (loss, probs, indices) in enumerate(zip(
                losses.tolist(), top.values.tolist(), top.indices.tolist())):
            nats[scored_until + offset] = loss
            guesses[scored_until + offset] = [(tokenizer.vocab[i], p)
                                              for p, i in zip(probs, indices)]
        scored_until = end + 1
        start += stride
    return Surprise(tokenizer.decode(ids), nats, guesses, context)


SURPRISE_256 = (34, 70, 106, 142, 178, 214, 208, 202, 196)  # green (sure) → red (lost)
SURPRISE_16 = ("green", "yellow", "red")


def surprise_level(nats: float, vocab_size: int, levels: int) -> int:
    """A loss as one of ``levels`` colours: 0 for a certain, right guess; the last for a loss of
    ``ln(vocab_size)`` or more — what guessing uniformly at random costs, so red means the model
    did no better than not knowing the language at all."""
    uniform = math.log(max(2, vocab_size))
    return max(0, min(levels - 1, round(nats / uniform * (levels - 1))))


# -- character embeddings --------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    """Token embeddings projected onto their two directions of largest variance (PCA).

    ``points[i]`` is character ``i``'s position; ``explained`` says how much of the embeddings'
    variance each axis shows (0.3 = 30%): a small total means the picture flattens a lot away.
    """

    points: torch.Tensor  # (vocab_size, 2)
    explained: tuple[float, float]


def pca_2d(embeddings: torch.Tensor, like: torch.Tensor | None = None) -> Projection:
    """Principal components via the SVD of the centred matrix: ``X = U S Vᵀ``; the rows of
    ``Vᵀ`` are the directions, ``S²`` the variance along each.

    An axis is defined up to its sign, and the SVD picks one at random: unfixed, the picture
    mirrors from one saved step to the next. Given ``like``, the points shown before (e.g. the
    previous step's, same characters), each axis is turned to agree with that picture: the
    characters' coordinates along it correlate positively with theirs. Without it, each axis's
    largest loading is made positive (a convention that holds a single picture steady, but
    across steps the largest loading can move to another dimension and flip the picture).
    """
    centred = embeddings.detach().float().cpu()
    centred = centred - centred.mean(0, keepdim=True)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2]
    if axes.size(0) < 2:  # a 1-wide embedding has one direction; the second axis is flat
        axes = torch.cat([axes, torch.zeros_like(axes)])
    if like is not None and like.shape == (centred.size(0), 2):
        agreement = ((centred @ axes.T) * like.float().cpu()).sum(0)  # one per axis
    else:
        agreement = axes.gather(1, axes.abs().argmax(1, keepdim=True)).squeeze(1)
    axes = axes * torch.where(agreement < 0, -1.0, 1.0).unsqueeze(1)
    variance = singular.pow(2)
    total = float(variance.sum()) or 1.0
    ratios = (variance / total).tolist() + [0.0, 0.0]
    return Projection(centred @ axes.T, (ratios[0], ratios[1]))


def embedding_projection(model: GPTLanguageModel, like: torch.Tensor | None = None
                         ) -> Projection:
    """The model's token embeddings in 2-D, oriented like ``like`` (see :func:`pca_2d`)."""
    return pca_2d(model.token_embedding_table.weight, like)


CHAR_GROUPS = ("vowel", "consonant", "capital", "digit", "punctuation", "whitespace")


def char_group(char: str) -> str:
    """The group a character is coloured by: a trained model tends to put each group together
    (it learns that vowels are interchangeable in many places, capitals start names...)."""
    if char.isspace():
        return "whitespace"
    if char.isdigit():
        return "digit"
    if char.isupper():
        return "capital"
    if char.isalpha():
        return "vowel" if char.lower() in "aeiouy" else "consonant"
    return "punctuation"


# -- runs compared ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Curves:
    """A run's loss curves as (step, loss) points: every step's training loss, and the
    train/val estimates of each evaluation."""

    steps: list[tuple[int, float]]
    train: list[tuple[int, float]]
    val: list[tuple[int, float]]


def compare_label(run: str | os.PathLike[str]) -> str:
    """How a compared run is named in a legend: its folder's name (``runs/latest`` resolved,
    so two runs compared one after the other are told apart)."""
    path = Path(run)
    if path.suffix == ".jsonl":
        path = path.parent
    return path.resolve().name or str(path)


def run_curves(run: str | os.PathLike[str]) -> Curves:
    """Another run's curves, from its ``metrics.jsonl`` (``run`` is the folder or the file).

    A resumed run logs some steps twice (the part after its last checkpoint is redone): the
    newest value of a step wins, as it is the one the weights continued from.
    """
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        raise UserError(f"no training log at {path}",
                        "pass a run folder written by chargpt-tui train (it holds metrics.jsonl)")
    steps: dict[int, float] = {}
    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for event in read_metrics(path):
        if isinstance(event, StepDone):
            steps[event.step] = event.loss
        elif isinstance(event, EvalDone):
            train[event.step], val[event.step] = event.train_loss, event.val_loss
    return Curves(sorted(steps.items()), sorted(train.items()), sorted(val.items()))
