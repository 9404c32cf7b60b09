"""Checkpoints: one file with everything needed to sample from a model or resume training.

Layout (plain data only, so ``torch.load(..., weights_only=True)`` can read it and nothing in the
file can run code): format version, model config, training config, vocabulary string, data name,
model and optimizer state dicts, step, best validation loss and the RNG states.

Writes are atomic: temp file in the same folder → fsync → ``os.replace`` → fsync the folder. A
crash at any moment leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chargpt_tui.data import encode_corpus, load_local_dataset
from chargpt_tui.device import pick_device
from chargpt_tui.errors import CheckpointError, UserError
from chargpt_tui.events import EvalDone, Event, StateChanged, TrainingStarted
from chargpt_tui.lecture import build_model
from chargpt_tui.model import GPTConfig, GPTLanguageModel, fused_copy
from chargpt_tui.nanogpt import NANOGPT_KEYS, from_nanogpt, is_nanogpt_checkpoint
from chargpt_tui.runs import BEST_NAME, CHECKPOINT_NAME
from chargpt_tui.tokenizer import CharTokenizer, UnknownCharacterError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "vocab", "model", "step")
FIELD_TYPES = {"model_config": dict, "vocab": str, "model": dict, "step": int}
OPTIONAL_FIELD_TYPES = {"train_config": dict, "optimizer": dict, "rng": dict, "data": str,
                        "preset": str, "origin": str, "rung": str}
# Model parts chargpt-tui 0.1.0 had and this version has not (they trained no better, see
# docs/recipe.md), each with the value that meant "off": checkpoints of 0.1.0 name them.
REMOVED_MODEL_PARTS: dict[str, object] = {"norm": "layernorm", "mlp": "gelu", "zero_init": False,
                                          "bigram": False}
LAST_WITH_THEM = ("0.1.0", "3a60aff")  # the version, and the last commit, that had them


def resolve_checkpoint(path: str | os.PathLike[str], prefer_best: bool = False) -> Path:
    """A checkpoint file, or a run folder holding ``ckpt.pt`` (or ``best.pt`` if preferred).

    Sampling prefers ``best.pt``: small corpora overfit, and the last weights are then not the
    best ones. Resuming needs ``ckpt.pt``, the only file with the optimizer state.
    """
    candidate = Path(path).expanduser()
    try:
        if candidate.is_dir():
            best = candidate / BEST_NAME
            candidate = best if prefer_best and best.is_file() else candidate / CHECKPOINT_NAME
        found = candidate.is_file()
    except OSError as error:  # e.g. a folder on the way that we may not enter
        raise CheckpointError(f"cannot look at {path}: {error.strerror or error}",
                              "check the path and its permissions") from None
    if not found:
        raise CheckpointError(f"no checkpoint at {path}",
                              "pass a ckpt.pt file or a run folder (e.g. runs/latest)")
    return candidate


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically. Raises CheckpointError if the disk refuses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_name, path)
        _fsync_dir(path.parent)
    except OSError as error:
        Path(tmp_name).unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write checkpoint {path}: {error.strerror or error}",
            "free some disk space or pass a writable --out; the previous checkpoint is intact",
        ) from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_stale_temp_files(folder: Path, name: str = CHECKPOINT_NAME) -> list[Path]:
    """Remove temp files a killed writer left behind; returns what was removed."""
    removed = []
    for stale in folder.glob(f".{name}.*.tmp"):
        try:
            stale.unlink()
            removed.append(stale)
        except OSError:
            pass
    return removed


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                    prefer_best: bool = False, meta: Path | None = None) -> dict[str, Any]:
    """Load and sanity-check a checkpoint with ``weights_only=True`` (never the unsafe loader).

    A nanoGPT checkpoint is converted on the way (see nanogpt.py); ``meta`` is its meta.pkl
    when that is not where nanoGPT's sample.py would find it."""
    file = resolve_checkpoint(path, prefer_best)
    try:
        payload = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the global a pickle wanted to call; anything else is plain garbage
        # (e.g. "Unsupported operand" for a text file), which is damage, not an attack.
        if "unsupported global" in str(error).lower():
            raise CheckpointError(
                f"refused to load {file}: it holds Python objects that could run code",
                "only load checkpoints written by chargpt-tui",
            ) from None
        raise CheckpointError(f"{file} is damaged or not a checkpoint") from None
    except Exception as error:  # noqa: BLE001 - a foreign file can break the unpickler any way
        # (seen: IndexError for a text file read as a legacy pickle); all of it means "damaged".
        detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise CheckpointError(f"{file} is damaged or not a checkpoint ({detail})") from None
    if is_nanogpt_checkpoint(payload) and any(k not in payload for k in REQUIRED_KEYS):
        payload = from_nanogpt(payload, file, meta)
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED_KEYS):
        raise CheckpointError(unknown_format(payload, file),
                              "pass a ckpt.pt written by chargpt-tui or by nanoGPT's train.py")
    version = payload["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} was written by a newer chargpt-tui (format {version}, this one reads "
            f"≤ {FORMAT_VERSION})", "upgrade chargpt-tui",
        )
    for key, kind in {**FIELD_TYPES, **OPTIONAL_FIELD_TYPES}.items():
        if key in payload and not isinstance(payload[key], kind):
            raise CheckpointError(f"{file} is not a chargpt-tui checkpoint ({key!r} is a "
                                  f"{type(payload[key]).__name__})")
    payload["model_config"] = current_model_config(payload["model_config"], file)
    check_model_fits(payload, file)
    return payload


def current_model_config(stored: dict[str, Any], file: Path) -> dict[str, Any]:
    """``stored`` without the removed parts, which an older checkpoint may name switched off."""
    switched_on = [f"{name}={stored[name]!r}" for name, off in REMOVED_MODEL_PARTS.items()
                   if name in stored and stored[name] != off]
    if switched_on:
        raise CheckpointError(
            f"{file} uses {', '.join(switched_on)}, removed from the model after chargpt-tui "
            f"{LAST_WITH_THEM[0]}",
            f"open it with chargpt-tui {LAST_WITH_THEM[0]} (git checkout {LAST_WITH_THEM[1]})",
        )
    return {k: v for k, v in stored.items() if k not in REMOVED_MODEL_PARTS}
def unknown_format(payload: object, file: Path) -> str:
    """Which fields the file has, and which each known format would need."""
    if not isinstance(payload, dict):
        return f"{file} is not a checkpoint (it holds a {type(payload).__name__}, not a dict)"
    has = ", ".join(sorted(map(str, payload))[:8]) or "no fields"
    ours = ", ".join(k for k in REQUIRED_KEYS if k not in payload)
    theirs = ", ".join(k for k in NANOGPT_KEYS if k not in payload)
    return (f"{file} is neither a chargpt-tui nor a nanoGPT checkpoint: it has {has}; "
            f"chargpt-tui's lacks {ours}; nanoGPT's lacks {theirs}")


def check_model_fits(payload: dict[str, Any], file: Path) -> None:
    """The weights must match the shape the checkpoint describes (config, vocabulary).

    Checked on the ``meta`` device, which allocates no memory, so a mismatch is reported here,
    naming the file and the first differing tensor, instead of deep inside ``load_state_dict``.
    """
    try:
        config = GPTConfig(**payload["model_config"])
    except (TypeError, UserError) as error:
        raise CheckpointError(f"{file} describes an invalid model: {error}") from None
    if len(payload["vocab"]) != config.vocab_size:
        raise CheckpointError(f"{file} is inconsistent: a vocabulary of {len(payload['vocab'])} "
                              f"characters for a model with {config.vocab_size}")
    with torch.device("meta"):
        expected = build_model(config, payload.get("rung")).state_dict()
    stored = payload["model"]
    missing = sorted(expected.keys() - stored.keys())
    unexpected = sorted(stored.keys() - expected.keys())
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:3])
        raise CheckpointError(f"{file} does not match its model description ({names})")
    for name, tensor in expected.items():
        value = stored[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{file} does not match its model description: {name} is "
                                  f"{shape}, the model needs {tuple(tensor.shape)}")


@dataclass
class SamplingModel:
    """A checkpoint opened for sampling: the fused eval-mode model, its tokenizer, and the raw
    payload (step, configs, last evaluation) for whoever wants to show them."""

    model: GPTLanguageModel
    tokenizer: CharTokenizer
    payload: dict[str, Any]
    file: Path
    device: torch.device

    @property
    def step(self) -> int:
        return int(self.payload["step"])

    def validation_excerpt(self) -> str | None:
        """The start of the run's validation text (two blocks, the text training hands the
        views), if its data is on this machine; None if not. The split is training's: the
        last tenth of the ids, read from the token cache (a corpus of any size)."""
        spec = self.payload.get("data")
        source = load_local_dataset(spec) if isinstance(spec, str) else None
        if source is None:
            return None
        try:
            ids = encode_corpus(source, vocab=self.tokenizer.vocab).tokens
        except (UserError, UnknownCharacterError):  # e.g. the file changed since the run
            return None
        start = int(0.9 * len(ids))
        return self.tokenizer.decode(ids[start:start + 2 * self.model.config.block_size]
                                     .tolist()) or None

    def history_events(self) -> list[Event]:
        """What the checkpoint can tell a run's panels, as the events a live run would have
        published: its start, its last evaluation, and that it is open for chat only."""
        payload, step = self.payload, self.step
        events: list[Event] = [TrainingStarted(
            step=step, max_iters=int(payload.get("train_config", {}).get("max_iters", step)),
            device=str(self.device), parameters=self.model.num_parameters(),
            data=str(payload.get("data", "?")), out_dir=str(self.file), config={})]
        last_eval = payload.get("last_eval") or {}
        if last_eval:
            events.append(EvalDone(step, last_eval["train"], last_eval["val"],
                                   payload.get("best_val_loss") or last_eval["val"],
                                   payload.get("best_step")))
        events.append(StateChanged("chat only"))
        return events


def load_for_sampling(path: str | os.PathLike[str], device: str = "auto",
                      prefer_best: bool = False, meta: Path | None = None) -> SamplingModel:
    """Everything a sampler needs from a checkpoint file or run folder (ours or nanoGPT's, whose
    vocabulary is in ``meta``, else found as its sample.py would), on ``device``."""
    torch_device = pick_device(device)
    file = resolve_checkpoint(path, prefer_best)
    payload = load_checkpoint(file, map_location=torch_device, meta=meta)
    model, tokenizer = _model_from_payload(payload, torch_device)
    return SamplingModel(model, tokenizer, payload, file, torch_device)


def _model_from_payload(payload: dict[str, Any], device: torch.device | str = "cpu"
                          ) -> tuple[GPTLanguageModel, CharTokenizer]:
    """A fused, eval-mode model and its tokenizer from a loaded checkpoint, ready to sample."""
    try:
        config = GPTConfig(**payload["model_config"])
        tokenizer = CharTokenizer(payload["vocab"])
        if tokenizer.vocab_size != config.vocab_size:
            raise CheckpointError(f"vocabulary of {tokenizer.vocab_size} characters does not "
                                  f"match the model's {config.vocab_size}")
        model = build_model(config, payload.get("rung"))
        model.load_state_dict(payload["model"])
    except (TypeError, RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0][:160]
        raise CheckpointError(f"checkpoint does not describe a valid model: {first}") from None
    return fused_copy(model.to(device)), tokenizer
