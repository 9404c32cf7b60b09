"""From options to a run: resolve preset < checkpoint < explicit options, pick the run folder,
load the data. The CLI and the TUI both call :func:`prepare_run`; the
:class:`~chargpt_tui.train.RunSetup` it returns is what a :class:`~chargpt_tui.train.Trainer`
starts from (defined next to the Trainer, so train.py never imports this module).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from chargpt_tui.checkpoint import load_checkpoint, resolve_checkpoint
from chargpt_tui.data import encode_corpus, load_dataset, split_tokens
from chargpt_tui.device import pick_device
from chargpt_tui.durations import format_duration, parse_duration
from chargpt_tui.errors import ConfigError, DataError
from chargpt_tui.model import GPTConfig
from chargpt_tui.presets import PRESETS, RECIPES, resolve_preset
from chargpt_tui.runs import CHECKPOINT_NAME
from chargpt_tui.tokenizer import CharTokenizer, UnknownCharacterError
from chargpt_tui.train import UNBOUNDED_STEPS, RunSetup, TrainConfig

LIVE_SAMPLE_CHARS = 160


def sample_at_evaluations(setup: RunSetup) -> None:
    """Live samples at every evaluation unless the run sets its own interval: often enough to
    watch the model learn, rare enough to cost training little. The app shows them; a headless
    run's metrics.jsonl carries them to ``--follow``."""
    if not setup.train_config.sample_interval:
        setup.train_config.sample_interval = setup.train_config.eval_interval
        setup.train_config.sample_chars = LIVE_SAMPLE_CHARS


MODEL_KEYS = {f.name for f in fields(GPTConfig)}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def default_out_dir(runs_root: Path = Path("runs")) -> Path:
    """A fresh run folder named by the start time: runs/20261125-221100."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = runs_root / stamp
    suffix = 1
    while out.exists():
        suffix += 1
        out = runs_root / f"{stamp}-{suffix}"
    return out


def prepare_run(
    *,
    data: str | None = None,
    preset: str = "auto",
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    device: str = "auto",
    encoding: str = "utf-8",
    progress: Callable[[int, int | None], None] | None = None,
    notice: Callable[[str], None] | None = None,
    encode_progress: Callable[[int, int | None], None] | None = None,
) -> RunSetup:
    """Resolve options (preset < checkpoint < explicit overrides) and load the data.

    ``overrides`` holds only options the user actually gave (None values are ignored). When
    resuming, the model shape comes from the checkpoint and may not be changed. ``progress``
    follows a download, ``encode_progress`` the first encoding of a file (bytes done, total).
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(given.get("time_budget"), str):  # as typed: "5m", "90s"
        given["time_budget"] = parse_duration(given["time_budget"])
    unknown = set(given) - MODEL_KEYS - TRAIN_KEYS - {"recipe"}
    if unknown:
        raise ConfigError(f"unknown training options: {', '.join(sorted(unknown))}")
    torch_device = pick_device(device)
    notices: list[str] = []

    def tell(message: str) -> None:
        # Shown once: at once through the callback, or else by the Trainer when it starts.
        if notice:
            notice(message)
        else:
            notices.append(message)

    checkpoint = None
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        if checkpoint.get("origin") == "nanogpt":
            raise ConfigError("cannot resume a nanoGPT checkpoint here (its optimizer and "
                              "settings are nanoGPT's)",
                              "sample, explain or open it with --checkpoint; train anew here")
        changed = [k for k in given if k in MODEL_KEYS and k != "dropout"
                   and given[k] != checkpoint["model_config"].get(k)]
        if changed:
            raise ConfigError(f"cannot change {', '.join(changed)} when resuming",
                              "drop those options, or start a new run without --resume")
        preset_name = checkpoint.get("preset", "custom")
        base = {**checkpoint["model_config"], **checkpoint.get("train_config", {})}
        data_spec = data or checkpoint.get("data", "shakespeare")
    else:
        preset_name = resolve_preset(preset, torch_device.type)
        if preset_name not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}",
                              f"choose one of: auto, {', '.join(PRESETS)}")
        base = dict(PRESETS[preset_name])
        data_spec = data or "shakespeare"
    if resume is None:  # a resumed run keeps its own parts (they are in its configs)
        recipe = str(given.pop("recipe", base.pop("recipe", "lecture")))
        if recipe not in RECIPES:
            raise ConfigError(f"unknown recipe {recipe!r}", f"choose one of: {', '.join(RECIPES)}")
        base = {**base, **RECIPES[recipe]}
        if "max_iters" in given and "time_budget" not in given:
            base.pop("time_budget", None)  # a step count asked for replaces the preset's clock
        elif (given.get("time_budget") or base.get("time_budget")) and "max_iters" not in given:
            base["max_iters"] = UNBOUNDED_STEPS  # the clock ends the run, not a step count
    elif "recipe" in given:
        raise ConfigError("cannot change the recipe when resuming",
                          "drop --recipe, or start a new run without --resume")
    elif base.get("time_budget") and not {"time_budget", "max_iters"} & set(given):
        raise ConfigError("this run was sized by a time budget",
                          "resume it with --time-budget (a new budget, with its own cooldown) "
                          "or --max-iters")
    elif "max_iters" in given and "time_budget" not in given:
        base["time_budget"] = None  # resumed to a step count: the old budget is spent
    settings = {**base, **given}
    # Check every option before any download or data loading: a typo should cost nothing.
    # (The real vocabulary size is only known once the text is loaded.)
    model_config = GPTConfig(**{"vocab_size": 1, **{k: v for k, v in settings.items()
                                                    if k in MODEL_KEYS}})
    train_config = TrainConfig(**{k: v for k, v in settings.items() if k in TRAIN_KEYS})
    out_dir = resolve_out_dir(out, resume)
    refuse_to_overwrite(out_dir, resume)

    source = load_dataset(data_spec, encoding=encoding, progress=progress, notice=tell)
    try:
        encoded = encode_corpus(source, encoding, checkpoint["vocab"] if checkpoint else None,
                                encode_progress, tell)
    except UnknownCharacterError as error:
        raise DataError(
            f"{source.name} has characters the checkpoint's vocabulary lacks: "
            f"{error.unknown[:20]!r}",
            "resume on the same data the run started with",
        ) from None
    if checkpoint is not None and source.name != checkpoint.get("data", source.name):
        tell(f"resuming on {source.name}, but this run started on {checkpoint['data']}")
    tokenizer = CharTokenizer(encoded.vocab)
    model_config = replace(model_config, vocab_size=tokenizer.vocab_size)
    split = split_tokens(encoded.tokens, model_config.block_size)
    return RunSetup(model_config, train_config, tokenizer, split, source.name, torch_device,
                    out_dir, preset_name, checkpoint, notices,
                    rung=checkpoint.get("rung") if checkpoint is not None else None)


def resolve_out_dir(out: str | Path | None, resume: str | Path | None) -> Path:
    """``--out``, else the folder of the checkpoint being resumed, else a fresh runs/<time>."""
    if out is not None:
        return Path(out).expanduser()
    if resume is not None:
        resumed = Path(resume).expanduser().resolve()
        return resumed if resumed.is_dir() else resumed.parent
    return default_out_dir()


def refuse_to_overwrite(out_dir: Path, resume: str | Path | None) -> None:
    """A new run must not replace a checkpoint someone already paid for in training time."""
    existing = out_dir / CHECKPOINT_NAME
    try:
        if not existing.exists():
            return
    except OSError:
        return  # a folder we may not look into: creating the run there reports it clearly
    if resume is not None and existing.resolve() == resolve_checkpoint(resume).resolve():
        return
    raise ConfigError(f"{out_dir} already holds a checkpoint that this run would overwrite",
                      f"continue it with --resume {out_dir}, or pick another --out")


# -- what to run next (the exit hints of `train` and the app) ------------------------------------

PROMPTS = {"shakespeare": "ROMEO:", "python-stdlib": "def "}


def suggested_prompt(data_name: str, vocab: str) -> str:
    """A prompt that fits the training text (every character in its vocabulary): a name for
    Shakespeare, ``def `` for Python sources, else '' (a newline: any text starts there)."""
    prompt = PROMPTS.get(data_name, "")
    return prompt if all(char in vocab for char in prompt) else ""


def sample_command(folder: Path, data_name: str, vocab: str) -> str:
    prompt = suggested_prompt(data_name, vocab)
    return (f"chargpt-tui sample --checkpoint {shlex.quote(str(folder))}"
            + (f" --prompt {shlex.quote(prompt)}" if prompt else ""))


def continue_command(folder: Path, train_config: TrainConfig, step: int, finished: bool,
                     app: bool = False) -> str:
    """The command that trains a run further from its checkpoint, as the resume rules of
    :func:`prepare_run` accept it: a run sized by a time budget needs a new budget, and a
    finished run a further step count."""
    command = f"chargpt-tui{'' if app else ' train'} --resume {shlex.quote(str(folder))}"
    if train_config.time_budget:
        return f"{command} --time-budget {format_duration(train_config.time_budget)}"
    if finished:
        return f"{command} --max-iters {max(2 * step, step + 1)}"
    return command
