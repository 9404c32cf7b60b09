"""The prompt pane's sampling settings: what the user edits, and the engine params they give."""

from __future__ import annotations

from dataclasses import dataclass, replace

from chargpt_tui.sampling import SamplingParams

MODE_LABELS = {"sample": "sample (temperature, top-k, top-p)",
               "beam": "beam search (likeliest text)"}


@dataclass(frozen=True)
class PromptSettings:
    mode: str = "sample"
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    beam_width: int = 4
    length: int = 200
    seed: int | None = None
    # Beam search's guard against loops (0 = off). Without it a small model's likeliest text is
    # "that that that…"; 4 read best of 0/3/4/6/10 (benchmarks/beam_repeat_guard.py; its
    # output in benchmarks/results/beam_repeat_guard.txt): 3 forbids even a second "the", 6 and
    # 10 still let short words repeat.
    no_repeat_ngram: int = 4

    def params(self) -> SamplingParams:
        """Engine parameters; raises ConfigError (one line) when a value cannot work."""
        beam = self.mode == "beam"
        return SamplingParams(
            max_new_tokens=self.length, temperature=self.temperature, top_k=self.top_k,
            top_p=self.top_p, seed=self.seed, beam_width=self.beam_width if beam else 1,
            no_repeat_ngram=self.no_repeat_ngram if beam else 0)

    def toggled(self) -> PromptSettings:
        return replace(self, mode="beam" if self.mode == "sample" else "sample")

    def describe(self) -> str:
        def show(value: object) -> str:
            return "–" if value is None else str(value)

        if self.mode == "beam":
            guard = f"{self.no_repeat_ngram}-gram guard" if self.no_repeat_ngram else "no guard"
            return f"beam · width {self.beam_width} · len {self.length} · {guard}"
        return (f"sample · T {self.temperature:g} · top-k {show(self.top_k)} · top-p "
                f"{show(self.top_p)} · len {self.length} · seed {show(self.seed)}")
