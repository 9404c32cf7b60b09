"""Named model + training shapes. ``--preset auto`` picks ``gpu`` on CUDA and ``cpu`` elsewhere.

Plain dictionaries of option values, so this module is cheap to import (the CLI's ``--help``
lists the names without loading torch). Explicit command-line options override a preset.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, int | float | str]] = {
    # Five minutes on any CPU, start to exit, with the fast recipe: the schedule is fitted to the
    # clock and the run ends on its best weights. Batch 24 (not 12) halves the steps, and with
    # them the per-step costs of Muon and Python; why these values: docs/recipe.md.
    "cpu": dict(recipe="fast", n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=24,
                dropout=0.0, learning_rate=3e-3, muon_lr=0.03, time_budget=300.0,
                warmup_iters=50, eval_interval=250, eval_iters=20),
    # nanoGPT's config/train_shakespeare_char.py: the GPU shape. It overfits this 1 MB corpus
    # after ~1750 steps (docs/recipe.md), so the cosine ends at 2500 and patience stops a run
    # that turns up for 4 evals.
    "gpu": dict(recipe="lecture", n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64,
                dropout=0.2, learning_rate=1e-3, max_iters=2500, warmup_iters=100,
                eval_interval=250, eval_iters=200, patience=4),
    # nanoGPT's README "I only have a macbook" recipe: the CPU quality reference (about 1 minute).
    "nanogpt-cpu": dict(recipe="lecture", n_layer=4, n_head=4, n_embd=128, block_size=64,
                        batch_size=12, dropout=0.0, learning_rate=1e-3, max_iters=2000,
                        warmup_iters=100, eval_interval=250, eval_iters=20),
    # The gpu preset's pace of steps on a GPU, reproduced on a CPU: does the app keep up with
    # a GPU's stream of events? benchmarks/app_at_gpu_pace.py; docs/app-performance.md.
    "gpu-pace": dict(recipe="lecture", n_layer=4, n_head=4, n_embd=64, block_size=64,
                     batch_size=8, dropout=0.0, learning_rate=3e-3, max_iters=3000,
                     warmup_iters=100, eval_interval=250, eval_iters=20),
    # Seconds, for trying the app out and for tests.
    "tiny": dict(recipe="lecture", n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8,
                 dropout=0.0, learning_rate=3e-3, max_iters=300, warmup_iters=10, eval_interval=50,
                 eval_iters=5),
}
PRESET_NAMES = ("auto", *PRESETS)

# What a recipe switches on (GPTConfig and TrainConfig fields), over its preset's values;
# explicit options override both. The lecture recipe is the defaults spelled out: the model of
# the lecture, one `--recipe lecture` away from any preset.
RECIPES: dict[str, dict[str, int | float | bool | str]] = {
    "lecture": dict(rope=False, qk_norm=False, optimizer="adamw", schedule="cosine"),
    # The parts that paid in the ablation (docs/recipe.md); WSD lets a time budget end on a
    # finished schedule.
    "fast": dict(rope=True, qk_norm=True, optimizer="muon", schedule="wsd"),
}
RECIPE_NAMES = tuple(RECIPES)


def recipe_of(settings: dict[str, object]) -> str:
    """The name of the recipe a run's settings match, or ``custom`` (for the stats line, runs)."""
    defaults = RECIPES["lecture"]  # what a setting left out (an older run's config) means
    for name, parts in RECIPES.items():
        if all(settings.get(k, defaults[k]) == v for k, v in parts.items()):
            return name
    return "custom"


def resolve_preset(name: str, device_type: str) -> str:
    """``auto`` → ``gpu`` on CUDA, ``cpu`` otherwise; other names pass through."""
    if name == "auto":
        return "gpu" if device_type == "cuda" else "cpu"
    return name
