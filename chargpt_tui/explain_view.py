"""``chargpt-tui explain``: a text coloured by how surprised the model is by each character.

The headless view of :func:`chargpt_tui.explain.surprise` (rich for colour; the engine has
none): green where the model was sure and right, red where it did no better than a uniform
guess, and the characters it found hardest with what it expected instead. ``--json`` prints the
per-character losses for scripts and notebooks.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.text import Text

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.errors import UserError
from chargpt_tui.explain import SURPRISE_256, Surprise, surprise, surprise_level

HARDEST_SHOWN = 5


def run_explain(checkpoint: Path, text: str, *, stride: int | None, top_k: int, device: str,
                as_json: bool, notice: Callable[[str], None], meta: Path | None = None) -> None:
    """Score ``text`` with the checkpoint's model and print it coloured by loss (or JSON).
    ``meta``: a nanoGPT checkpoint's meta.pkl, when not where nanoGPT would look."""
    opened = load_for_sampling(checkpoint, device, prefer_best=True, meta=meta)
    model, tokenizer, payload, file = opened.model, opened.tokenizer, opened.payload, opened.file
    ids, unknown = tokenizer.encode_lenient(text)
    if unknown:
        notice(f"left out characters the model never saw: {unknown!r}")
    if len(ids) < 2:
        raise UserError("the text needs at least two known characters to score",
                        "pass a longer --text or --file")
    if top_k < 1:
        raise UserError(f"top-k must be at least 1, not {top_k}")
    if stride is not None and not 1 <= stride <= model.config.block_size:
        raise UserError(f"stride must be between 1 and the context ({model.config.block_size})")
    result = surprise(model, tokenizer, ids, stride=stride, top_k=top_k)
    if as_json:
        sys.stdout.write(json.dumps(as_record(result, str(file), payload["step"])) + "\n")
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[b]{file}[/b] · step {payload['step']} · {len(ids)} characters · "
                  f"context ≥ {result.context} after the first {model.config.block_size}")
    console.print(coloured(result, model.config.vocab_size))
    console.print(summary(result, model.config.vocab_size))


def as_record(result: Surprise, checkpoint: str, step: int) -> dict[str, object]:
    return {
        "checkpoint": checkpoint, "step": step, "text": result.chars,
        "mean_nats": result.mean_nats, "mean_bits": result.mean_nats / math.log(2),
        "context": result.context,
        "chars": [{"char": char, "nats": nats, "bits": bits,
                   "guesses": [[c, p] for c, p in guesses]}
                  for char, nats, bits, guesses in zip(result.chars, result.nats, result.bits,
                                                       result.guesses)],
    }


def coloured(result: Surprise, vocab_size: int) -> Text:
    """The text, each character on a background from green (sure) to red (lost)."""
    text = Text()
    for char, nats in zip(result.chars, result.nats):
        if nats is None:
            text.append(char, style="dim")
            continue
        colour = SURPRISE_256[surprise_level(nats, vocab_size, len(SURPRISE_256))]
        shown = "⏎\n" if char == "\n" else char
        text.append(shown, style=f"black on color({colour})")
    return text


def summary(result: Surprise, vocab_size: int) -> Text:
    """Mean loss, its perplexity, the scale, and the hardest characters with the model's
    guesses."""
    mean = result.mean_nats
    out = Text()
    out.append(f"\nmean loss {mean:.3f} nats = {mean / math.log(2):.2f} bits per character · "
               f"perplexity {math.exp(mean):.1f} (as unsure as choosing among that many "
               f"characters; guessing uniformly: {vocab_size})\n")
    out.append("scale: ")
    for level, colour in enumerate(SURPRISE_256):
        out.append("  ", style=f"on color({colour})")
        if level == 0:
            out.append(" sure ")
    out.append(f" lost (≥ {math.log(vocab_size):.1f} nats)\n")
    scored = sorted(((n, i) for i, n in enumerate(result.nats) if n is not None), reverse=True)
    out.append("hardest characters:\n", style="bold")
    for nats, position in scored[:HARDEST_SHOWN]:
        before = result.chars[max(0, position - 12):position].replace("\n", "⏎")
        char = {"\n": "⏎", " ": "␣"}.get(result.chars[position], result.chars[position])
        guesses = "  ".join(f"{c!r} {p:.0%}" for c, p in result.guesses[position][:3])
        out.append(f"  …{before}")
        out.append(char, style="bold red")
        out.append(f"  {nats:.2f} nats · expected {guesses}\n")
    return out
