"""Open checkpoints written by nanoGPT's ``train.py`` (e.g. its ``shakespeare_char`` run).

nanoGPT's GPT is this project's lecture model under other names: token and position tables, one
fused QKV projection (queries, keys, values stacked the same way as ours), a GELU MLP, pre-norm
LayerNorm with or without biases, and an output head tied to the token table. So its weights map
one to one onto :class:`~chargpt_tui.model.GPTLanguageModel`, and the converted checkpoint goes
through the same checks as ours.

Its ``ckpt.pt`` holds ``model`` (the state dict; ``_orig_mod.`` in front of every name when the
model was compiled), ``model_args``, ``iter_num``, ``best_val_loss`` and ``config``. The
characters live apart, in the ``meta.pkl`` that its ``prepare.py`` wrote: a pickle, which can run
code when loaded, so it is read with an unpickler that builds nothing but plain data.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from chargpt_tui.errors import CheckpointError

NANOGPT_KEYS = ("model", "model_args", "iter_num", "config")
MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
COMPILED_PREFIX = "_orig_mod."

# nanoGPT's module names → ours, per block and for the whole model.
BLOCK_NAMES = {
    "ln_1": "ln1", "attn.c_attn": "sa.qkv", "attn.c_proj": "sa.proj",
    "ln_2": "ln2", "mlp.c_fc": "ffwd.net.0", "mlp.c_proj": "ffwd.net.2",
}
MODEL_NAMES = {
    "transformer.wte": "token_embedding_table", "transformer.wpe": "position_embedding_table",
    "transformer.ln_f": "ln_f", "lm_head": "lm_head",
}


def is_nanogpt_checkpoint(payload: object) -> bool:
    return isinstance(payload, dict) and all(key in payload for key in NANOGPT_KEYS)


def from_nanogpt(payload: dict[str, Any], file: Path, meta: Path | None = None
                 ) -> dict[str, Any]:
    """A nanoGPT checkpoint as a chargpt-tui checkpoint payload (weights renamed, vocabulary
    from its meta.pkl). Raises :class:`CheckpointError` with one line for anything missing."""
    args = payload["model_args"]
    if not isinstance(args, dict) or any(key not in args for key in MODEL_ARGS):
        lacking = [key for key in MODEL_ARGS if not isinstance(args, dict) or key not in args]
        raise CheckpointError(f"{file} is a nanoGPT checkpoint without model_args "
                              f"{', '.join(lacking)}")
    config = payload["config"] if isinstance(payload["config"], dict) else {}
    meta_file = find_meta(file, config.get("dataset"), meta)
    vocab = read_meta(meta_file)
    if len(vocab) != int(args["vocab_size"]):
        raise CheckpointError(
            f"{file} has a vocabulary of {args['vocab_size']} tokens but {meta_file} has "
            f"{len(vocab)} characters",
            "pass --meta with the meta.pkl of the dataset this model was trained on",
        )
    model_config = {key: args[key] for key in MODEL_ARGS}
    model_config["dropout"] = 0.0  # for sampling; nanoGPT's own value is in model_args
    best = payload.get("best_val_loss")
    return {
        "format_version": 1,
        "model_config": model_config,
        "vocab": vocab,
        "model": rename_weights(payload["model"], bool(args["bias"])),
        "step": int(payload["iter_num"]),
        "data": str(config.get("dataset", "nanoGPT")),
        "best_val_loss": float(best) if isinstance(best, (int, float, torch.Tensor)) else None,
        "origin": "nanogpt",
    }


def rename_weights(state: dict[str, torch.Tensor], bias: bool) -> dict[str, torch.Tensor]:
    """nanoGPT's state dict under our names; the tied head is filled from the token table."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        key = key.removeprefix(COMPILED_PREFIX)
        if key.endswith(".attn.bias") and tensor.dim() == 4:
            continue  # the causal mask buffer of nanoGPT's slow attention path: not a weight
        out[our_name(key)] = tensor
    out.setdefault("lm_head.weight", out.get("token_embedding_table.weight", torch.empty(0)))
    if bias:  # nanoGPT's head never has a bias; ours has one when the model has biases
        head = out["lm_head.weight"]
        out.setdefault("lm_head.bias", torch.zeros(head.size(0), dtype=head.dtype))
    return out


def our_name(key: str) -> str:
    """``transformer.h.3.attn.c_attn.weight`` → ``blocks.3.sa.qkv.weight``; unknown names are
    kept, so the shape check names them."""
    module, _, kind = key.rpartition(".")
    if module in MODEL_NAMES:
        return f"{MODEL_NAMES[module]}.{kind}"
    if module.startswith("transformer.h."):
        index, _, part = module.removeprefix("transformer.h.").partition(".")
        if part in BLOCK_NAMES:
            return f"blocks.{index}.{BLOCK_NAMES[part]}.{kind}"
    return key


def find_meta(file: Path, dataset: object, meta: Path | None) -> Path:
    """Where nanoGPT's ``sample.py`` would look (``data/<dataset>/meta.pkl`` from the current
    folder), then next to the checkpoint; ``--meta`` overrides both."""
    if meta is not None:
        if not meta.is_file():
            raise CheckpointError(f"no meta.pkl at {meta}", "check the path given to --meta")
        return meta
    candidates = []
    if isinstance(dataset, str) and dataset:
        candidates.append(Path("data") / dataset / "meta.pkl")
    candidates.append(file.parent / "meta.pkl")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"{file} is a nanoGPT checkpoint, but its meta.pkl is not in "
        f"{' or '.join(str(c) for c in candidates)}",
        "run from nanoGPT's folder, or pass --meta path/to/meta.pkl",
    )


class PlainDataUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers; refuses every class and function (the way a
    pickle runs code is by naming one)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}")


def read_meta(path: Path) -> str:
    """The vocabulary of a nanoGPT ``meta.pkl`` ({vocab_size, itos, stoi}) as a string, id order."""
    try:
        meta = PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"refused {path}: it holds Python objects ({error}), not only "
                              "a vocabulary", "use the meta.pkl that nanoGPT's prepare.py wrote"
                              ) from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    except Exception:  # noqa: BLE001 - truncated or not a pickle: damaged either way
        raise CheckpointError(f"{path} is damaged or not a meta.pkl") from None
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or not all(
            isinstance(i, int) and isinstance(c, str) and len(c) == 1 for i, c in itos.items()):
        raise CheckpointError(f"{path} is not a character-level meta.pkl (no itos of single "
                              "characters)", "only nanoGPT's char-level checkpoints open here")
    if sorted(itos) != list(range(len(itos))) or len(set(itos.values())) != len(itos):
        raise CheckpointError(f"{path} is inconsistent: its ids are not 0..{len(itos) - 1}, "
                              "one character each")
    return "".join(itos[i] for i in range(len(itos)))
