"""How much the no-repeat n-gram guard changes beam search output, on a trained checkpoint.

Beam search over characters keeps the likeliest text, and for a small model the likeliest text
is a loop (``in in in = in in``). This prints, for each guard length, how repetitive the beams'
best text is and the text itself, so the app's default can be chosen by reading it:

    python benchmarks/beam_repeat_guard.py runs/latest [--width 4] [--length 200]

The output that chose the default (guard 4) is kept in results/beam_repeat_guard.txt.

Repetition figures: distinct words / words, the longest run of one repeated word, and the share
of 12-character windows that occurred earlier in the same text (0 = no loops).
"""

from __future__ import annotations

import argparse
import re

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.sampling import SamplingParams, beam_search, prepare_prompt

PROMPTS = ("ROMEO:\n", "First Citizen:\n", "The king ", "O, what ", "KING HENRY:\nMy lord, ")
GUARDS = (0, 3, 4, 6, 10)
WINDOW = 12


def repetition(text: str) -> tuple[float, int, float]:
    words = re.findall(r"[A-Za-z']+", text)
    distinct = len(set(words)) / len(words) if words else 1.0
    longest = run = 1 if words else 0
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        longest = max(longest, run)
    windows = [text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1)]
    seen: set[str] = set()
    repeated = 0
    for window in windows:
        repeated += window in seen
        seen.add(window)
    return distinct, longest, repeated / len(windows) if windows else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--length", type=int, default=200)
    args = parser.parse_args()
    opened = load_for_sampling(args.checkpoint, device="cpu")
    model, tokenizer = opened.model, opened.tokenizer
    for guard in GUARDS:
        figures = []
        for prompt_text in PROMPTS:
            prompt = prepare_prompt(tokenizer, prompt_text, model.config.block_size)
            params = SamplingParams(max_new_tokens=args.length, beam_width=args.width,
                                    no_repeat_ngram=guard)
            *_, last = beam_search(model, prompt.ids, params)
            text = tokenizer.decode(last.best)
            figures.append(repetition(text))
            print(f"--- guard {guard} · {prompt_text!r}\n{text}")
        distinct, longest, repeated = (sum(f[i] for f in figures) / len(figures)
                                       for i in range(3))
        print(f"=== guard {guard}: distinct words {distinct:.2f} · longest word run "
              f"{longest:.1f} · repeated {WINDOW}-char windows {repeated:.2f}\n")


if __name__ == "__main__":
    main()
