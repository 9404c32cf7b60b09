"""Named model + training shapes. ``--preset auto`` picks ``gpu`` on CUDA and ``cpu`` elsewhere.

Plain dictionaries of option values, so this module is cheap to import (the CLI's ``--help``
lists the names without loading torch). Explicit command-line options override a preset.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, int | float]] = {
    # About 6 minutes on 2 CPU cores (measured: 6m17s, val 1.575). Against nanoGPT's CPU recipe
    # (block 64, lr 1e-3): twice the context at the same tokens/s, and twice the learning rate,
    # which a model this small takes well. At equal tokens it reached val 1.565 on 6.6M tokens
    # vs the recipe's 1.578 on 7.7M.
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=12, dropout=0.0,
                learning_rate=2e-3, max_iters=4300, warmup_iters=100, eval_interval=500,
                eval_iters=50),
    # nanoGPT's config/train_shakespeare_char.py: the GPU shape.
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2,
                learning_rate=1e-3, max_iters=5000, warmup_iters=100, eval_interval=250,
                eval_iters=200),
    # nanoGPT's README "I only have a macbook" recipe: the CPU quality reference (about 1 minute).
    "nanogpt-cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12,
                        dropout=0.0, learning_rate=1e-3, max_iters=2000, warmup_iters=100,
                        eval_interval=250, eval_iters=20),
    # Seconds, for trying the app out and for tests.
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, dropout=0.0,
                 learning_rate=3e-3, max_iters=300, warmup_iters=10, eval_interval=50,
                 eval_iters=5),
}
PRESET_NAMES = ("auto", *PRESETS)

# What a recipe switches on (GPTConfig and TrainConfig fields). A recipe's values override its
# preset's (they come with the learning rates they were measured with); explicit options
# override both. The lecture recipe is the defaults spelled out: the model of the lecture.
RECIPES: dict[str, dict[str, int | float | bool | str]] = {
    "lecture": dict(rope=False, norm="layernorm", qk_norm=False, mlp="gelu", zero_init=False,
                    bigram=False, optimizer="adamw", schedule="cosine"),
    # What paid in the ablation (README): rotary positions, QK-norm, Muon; WSD lets a time budget
    # end on a finished schedule. RMSNorm, ReLU², zero init and the bigram table did not (val
    # within ±0.003 at equal tokens, and more operations per step on a CPU).
    "fast": dict(rope=True, norm="layernorm", qk_norm=True, mlp="gelu", zero_init=False,
                 bigram=False, optimizer="muon", schedule="wsd"),
}
RECIPE_NAMES = tuple(RECIPES)


def recipe_of(settings: dict[str, object]) -> str:
    """The name of the recipe a run's settings match, or ``custom`` (for the stats line, runs)."""
    for name, parts in RECIPES.items():
        switches = {k: v for k, v in parts.items() if k in RECIPES["lecture"]}
        defaults = RECIPES["lecture"]
        if all(settings.get(k, defaults[k]) == v for k, v in switches.items()):
            return name
    return "custom"


def resolve_preset(name: str, device_type: str) -> str:
    """``auto`` → ``gpu`` on CUDA, ``cpu`` otherwise; other names pass through."""
    if name == "auto":
        return "gpu" if device_type == "cuda" else "cpu"
    return name
