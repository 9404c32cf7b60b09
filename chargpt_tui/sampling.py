"""Turning logits into text: temperature / top-k / top-p sampling and beam search, streamed.

Both samplers feed the model through a KV cache (:class:`~chargpt_tui.kv_cache.KVCache`): the
prompt is run once ("prefill"), then each new character costs one position instead of the whole
context.

**Past ``block_size``.** Positions are learned embeddings 0..block_size-1, so cached keys carry
their position and a cache cannot simply slide. Two policies:

* ``"refill"`` (default): when the cache is full, re-run the last ``block_size // 2`` tokens from
  position 0 and continue with the cache. Fast (one prefill every block_size/2 tokens), and the
  model always sees at least half a block of context — but no longer token-for-token equal to the
  lecture's ``generate``, which re-runs the last ``block_size`` tokens every step.
* ``"exact"``: once past the block, re-run the last ``block_size`` tokens every step. Equal to
  ``generate``, and as slow.

Inside the block both are exactly the lecture's ``generate`` (the tests check token for token).

A model with rotary positions needs neither: its cache slides (a ring, see ``kv_cache.LayerKV``),
which is exactly its own definition past the block — attention within a ``block_size``-wide window.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from chargpt_tui.errors import ConfigError
from chargpt_tui.kv_cache import KVCache
from chargpt_tui.model import GPTLanguageModel
from chargpt_tui.tokenizer import CharTokenizer, describe_chars

CONTEXT_POLICIES = ("refill", "exact")


@dataclass
class SamplingParams:
    """Everything that shapes one continuation. Validated on creation (one-line errors)."""

    max_new_tokens: int = 500
    temperature: float = 1.0  # 0 = greedy (always the most likely character)
    top_k: int | None = None  # keep only the k most likely characters
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)
    seed: int | None = None  # same seed, same weights, same params → same text
    beam_width: int = 1  # > 1: beam search instead of sampling
    no_repeat_ngram: int = 0  # beam search: forbid repeating any n-gram of this length (0 = off)
    context_policy: str = "refill"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ConfigError("max-new-tokens must be 0 or more")
        if self.temperature < 0 or self.temperature != self.temperature:
            raise ConfigError(f"temperature {self.temperature} is negative",
                              "use 0 for greedy or a positive value such as 0.8")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top-k {self.top_k} is below 1", "use top-k ≥ 1 or leave it unset")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top-p {self.top_p} is outside (0, 1]", "use e.g. --top-p 0.9")
        if self.beam_width < 1:
            raise ConfigError(f"beam width {self.beam_width} is below 1",
                              "use 1 for sampling or 2+ for beam search")
        if self.no_repeat_ngram < 0:
            raise ConfigError("no-repeat-ngram must be 0 (off) or more")
        if self.context_policy not in CONTEXT_POLICIES:
            raise ConfigError(f"context policy {self.context_policy!r} is not one of "
                              f"{', '.join(CONTEXT_POLICIES)}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be between 0 and 2**63 - 1, not {self.seed}")


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature → top-k → top-p, in that order (as Hugging Face does). ``logits``: (B, V)."""
    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.size(-1):
        # topk + scatter keeps exactly k entries; a "< kth value" threshold would keep ties.
        values, indices = torch.topk(logits, params.top_k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token once the tokens *before* it already reach top_p (the top one always stays).
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= params.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, params: SamplingParams,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One next token per row of ``logits`` (B, V) → (B, 1)."""
    if params.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = F.softmax(filter_logits(logits.float(), params), dim=-1)
    if not torch.isfinite(probs).all():
        raise FloatingPointError("the model produced non-finite probabilities")
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model: GPTLanguageModel,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The lecture's sampler: re-run the (cropped) context for every new token. No cache.

    Simple and obviously correct; :func:`stream_tokens` is the fast, streaming one and the
    tests check the two agree.
    """
    params = SamplingParams(temperature=temperature, top_k=top_k)
    for _ in range(max_new_tokens):
        # Learned positions stop at block_size: crop. A rotary model takes the whole history
        # and its attention mask keeps each position to a block_size-wide sliding window.
        idx_cond = idx if model.config.rope else idx[:, -model.config.block_size :]
        logits, _ = model(idx_cond)
        next_id = sample_next(logits[:, -1, :], params, generator)
        idx = torch.cat((idx, next_id), dim=1)
    return idx


@dataclass
class Prompt:
    """A prompt ready for the model, and what had to change to make it fit."""

    ids: list[int]
    dropped: str = ""  # characters not in the vocabulary, removed
    cropped: int = 0  # characters before the last block_size that the model cannot see

    def warnings(self) -> list[str]:
        notes = []
        if self.dropped:
            unknown = describe_chars(self.dropped)
            notes.append(f"dropped characters the model does not know: {unknown}")
        if self.cropped:
            notes.append(f"the prompt is longer than the model's context; only its last "
                         f"{len(self.ids) - self.cropped} characters are used")
        return notes


def prepare_prompt(tokenizer: CharTokenizer, text: str, block_size: int) -> Prompt:
    """Encode a user's prompt leniently: unknown characters are dropped (and reported).

    An empty prompt starts from a newline when the vocabulary has one (a natural "start of
    text" for line-based corpora), else from token 0.
    """
    ids, dropped = tokenizer.encode_lenient(text)
    if not ids:
        ids = [tokenizer.stoi.get("\n", 0)]
    return Prompt(ids=ids, dropped=dropped, cropped=max(0, len(ids) - block_size))


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A private RNG for one generation, so sampling never disturbs (or depends on) training."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class _CachedContext:
    """Feeds a growing batch of sequences through a KV cache, applying the context policy.

    A model without a cache (the lecture's rungs, lecture.py) re-runs its last ``block_size``
    tokens for every new one instead, as the lecture's ``generate`` does: exact, and cheap at
    their size.
    """

    def __init__(self, model: GPTLanguageModel, batch: int, policy: str) -> None:
        self.model = model
        self.block_size = model.config.block_size
        self.policy = policy
        param = next(model.parameters())
        self.cached = hasattr(model, "forward_cached")
        # (unused without forward_cached; kept so beam search's reorder works the same)
        self.cache = KVCache(model.config, batch, param.device, param.dtype)
        self.device = param.device

    def prefill(self, context: torch.Tensor) -> torch.Tensor:
        """Restart the cache from the given (B, T ≤ block_size) tokens; logits of the last one."""
        if not self.cached:
            return self.model(context)[0][:, -1, :]
        self.cache.reset()
        return self.model.forward_cached(context, self.cache)

    def step(self, new_tokens: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Logits after appending ``new_tokens`` (B, 1); ``history`` is every token so far."""
        if not self.cached:
            return self.prefill(history[:, -self.block_size :])
        if self.cache.length < self.block_size or self.model.config.rope:
            return self.model.forward_cached(new_tokens, self.cache)  # a rotary cache slides
        keep = self.block_size if self.policy == "exact" else self.block_size // 2
        return self.prefill(history[:, -max(keep, 1) :])


@torch.inference_mode()
def stream_tokens(model: GPTLanguageModel, prompt_ids: list[int],
                  params: SamplingParams) -> Generator[int, None, None]:
    """Yield sampled token ids one at a time (batch 1), as soon as each is chosen."""
    ctx = _CachedContext(model, 1, params.context_policy)
    generator = make_generator(params.seed, ctx.device)
    history = torch.tensor([prompt_ids], dtype=torch.long, device=ctx.device)
    logits = ctx.prefill(history[:, -ctx.block_size :])
    for _ in range(params.max_new_tokens):
        next_id = sample_next(logits, params, generator)
        yield int(next_id)
        history = torch.cat((history, next_id), dim=1)
        logits = ctx.step(next_id, history)


def stream_text(model: GPTLanguageModel, tokenizer: CharTokenizer, prompt: Prompt,
                params: SamplingParams) -> Iterator[str]:
    """Characters of the continuation as they are produced."""
    for token in stream_tokens(model, prompt.ids, params):
        yield tokenizer.vocab[token]


@dataclass
class BeamState:
    """Beam search progress after a step: live beams best first (generated ids only)."""

    sequences: list[list[int]]
    scores: list[float]  # summed log-probabilities of each beam's generated tokens
    stable: int  # length of the prefix all live beams share: it can no longer change
    done: bool = False

    @property
    def best(self) -> list[int]:
        return self.sequences[0]

    def result(self, tokenizer: CharTokenizer) -> BeamResult:
        """Decoded beams that are real continuations (finite score), best first.

        With fewer reachable continuations than beams (tiny vocabularies, the first steps, or a
        no-repeat guard), the leftover beams keep a score of -inf and are not continuations."""
        live = [(tokenizer.decode(seq), score) for seq, score in zip(self.sequences, self.scores)
                if score > float("-inf")]
        return BeamResult([text for text, _ in live], [score for _, score in live],
                          len(self.best))


@dataclass
class BeamResult:
    """What a beam search found: the texts of the live beams and their scores, best first."""

    texts: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    chars: int = 0  # the best beam's length: short of max_new_tokens if the n-gram guard ended it


def _banned_tokens(sequence: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in ``sequence``."""
    if n <= 0 or len(sequence) < n:
        return set()
    tail = sequence[len(sequence) - n + 1 :] if n > 1 else []
    return {sequence[i + n - 1] for i in range(len(sequence) - n + 1)
            if sequence[i : i + n - 1] == tail}


def _common_prefix(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = len(first)
    for other in sequences[1:]:
        length = next((i for i in range(length) if other[i] != first[i]), length)
    return length


@torch.inference_mode()
def beam_search(model: GPTLanguageModel, prompt_ids: list[int],
                params: SamplingParams) -> Iterator[BeamState]:
    """Keep the ``beam_width`` most probable continuations, one batched forward per step.

    Scores are summed log-probabilities. With no end-of-text token every beam has the same
    length, so length normalisation would change nothing and is not applied. Yields a
    :class:`BeamState` after every step; the last one has ``done=True``.
    """
    width = params.beam_width
    ctx = _CachedContext(model, 1, params.context_policy)
    history = torch.tensor([prompt_ids], dtype=torch.long, device=ctx.device)
    logits = ctx.prefill(history[:, -ctx.block_size :])
    # All beams start as copies of the prompt; only beam 0 is "live" (-inf elsewhere), otherwise
    # the first step would pick the same token W times.
    ctx.cache.reorder(torch.zeros(width, dtype=torch.long, device=ctx.device))
    history = history.expand(width, -1)
    logits = logits.expand(width, -1)
    # Accumulate in at least fp32 (bf16 log-probs would drift as the sums grow).
    score_dtype = torch.promote_types(logits.dtype, torch.float32)
    scores = torch.full((width,), float("-inf"), device=ctx.device, dtype=score_dtype)
    scores[0] = 0.0
    sequences: list[list[int]] = [[] for _ in range(width)]
    vocab = logits.size(-1)
    for step in range(params.max_new_tokens):
        candidates = scores[:, None] + F.log_softmax(logits.to(score_dtype), dim=-1)  # (W, V)
        if params.no_repeat_ngram:
            for beam, seq in enumerate(sequences):
                banned = _banned_tokens(prompt_ids + seq, params.no_repeat_ngram)
                if banned:
                    candidates[beam, list(banned)] = float("-inf")
        # Without an end token no candidate ever leaves the beam, so the top W suffice
        # (decoders with EOS take 2W so finished beams can be set aside).
        best_scores, flat = candidates.view(-1).topk(width)
        if best_scores[0] == float("-inf"):
            # The n-gram guard banned every continuation of every beam: end the search early.
            live = [s for s, score in zip(sequences, scores.tolist()) if score > float("-inf")]
            yield BeamState(sequences, scores.tolist(), _common_prefix(live), done=True)
            return
        scores = best_scores
        parents, tokens = flat // vocab, flat % vocab
        ctx.cache.reorder(parents)
        sequences = [sequences[p] + [t] for p, t in zip(parents.tolist(), tokens.tolist())]
        history = torch.cat((history[parents], tokens[:, None]), dim=1)
        live = [s for s, score in zip(sequences, scores.tolist()) if score > float("-inf")]
        last = step == params.max_new_tokens - 1
        yield BeamState(sequences, scores.tolist(), _common_prefix(live), done=last)
        if not last:
            logits = ctx.step(tokens[:, None], history)
    if params.max_new_tokens == 0:
        yield BeamState([[]], [0.0], 0, done=True)


@dataclass
class BeamText:
    """One step of a beam search as text: what to append for good, what to show for now."""

    stable: str  # newly agreed on by every live beam: it can no longer change
    tentative: str  # the rest of the best beam: may still change
    state: BeamState


def stream_beam_text(model: GPTLanguageModel, tokenizer: CharTokenizer, prompt: Prompt,
                     params: SamplingParams) -> Iterator[BeamText]:
    """Beam search streamed the way a reader can follow it: the shared prefix as it settles
    (the CLI prints only that), plus the best beam's unsettled tail (the app shows it dimmed)."""
    shown = 0
    for state in beam_search(model, prompt.ids, params):
        stable = tokenizer.decode(state.best[shown : state.stable])
        shown = state.stable
        yield BeamText(stable, tokenizer.decode(state.best[state.stable :]), state)


@torch.inference_mode()
def next_char_probabilities(model: GPTLanguageModel, tokenizer: CharTokenizer, text: str,
                            count: int) -> list[tuple[str, float]]:
    """The ``count`` likeliest next characters after ``text`` and their probabilities (no
    temperature or filtering: what the model itself expects)."""
    prompt = prepare_prompt(tokenizer, text, model.config.block_size)
    window = prompt.ids[-model.config.block_size :]
    device = next(model.parameters()).device
    logits, _ = model(torch.tensor([window], device=device))
    probs = logits[0, -1].float().softmax(-1)
    top = probs.topk(min(count, probs.numel()))
    return [(tokenizer.vocab[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]
