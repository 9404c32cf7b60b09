"""nanoGPT checkpoints open everywhere, and our model computes what nanoGPT's computes.

The reference below is written from nanoGPT's published model.py (no file of nanoGPT is used):
token + position embeddings, pre-norm blocks of causal self-attention (one c_attn for q, k, v,
softmax(QKᵀ/√d) with a causal mask) and a GELU MLP, LayerNorm (eps 1e-5, optional bias), and
``lm_head`` tied to ``wte``; the loss is cross-entropy with ``ignore_index=-1``.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from helpers_robust import assert_one_line_error, invoke
from torch.nn import functional as F

from chargpt_tui.checkpoint import load_checkpoint, load_for_sampling
from chargpt_tui.errors import CheckpointError

TEXT = "Old Baker:\nBring the bread in, quick, the oven grows cold.\n\nBoy:\nSpeak, sir?\n"
ARGS = dict(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=0, dropout=0.0)


def nanogpt_state(args: dict, bias: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under nanoGPT's names, large enough that every part changes the loss."""
    g = torch.Generator().manual_seed(seed)
    C, V, L = args["n_embd"], args["vocab_size"], args["n_layer"]

    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {"transformer.wte.weight": rand(V, C),
          "transformer.wpe.weight": rand(args["block_size"], C)}
    linears = {"attn.c_attn": (3 * C, C), "attn.c_proj": (C, C), "mlp.c_fc": (4 * C, C),
               "mlp.c_proj": (C, 4 * C)}
    for i in range(L):
        for norm in ("ln_1", "ln_2"):
            sd[f"transformer.h.{i}.{norm}.weight"] = 1 + rand(C)
            if bias:
                sd[f"transformer.h.{i}.{norm}.bias"] = rand(C)
        for name, shape in linears.items():
            sd[f"transformer.h.{i}.{name}.weight"] = rand(*shape)
            if bias:
                sd[f"transformer.h.{i}.{name}.bias"] = rand(shape[0])
    sd["transformer.ln_f.weight"] = 1 + rand(C)
    if bias:
        sd["transformer.ln_f.bias"] = rand(C)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # tied: one tensor, saved under both
    return sd


def nanogpt_loss(sd: dict[str, torch.Tensor], args: dict, idx: torch.Tensor,
                 targets: torch.Tensor) -> torch.Tensor:
    """nanoGPT's forward, written out (its slow attention path: an explicit masked softmax)."""
    B, T = idx.shape
    C, nh = args["n_embd"], args["n_head"]

    def ln(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (C,), sd[f"{name}.weight"], sd.get(f"{name}.bias"), 1e-5)

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T))
    for i in range(args["n_layer"]):
        p = f"transformer.h.{i}"
        q, k, v = linear(ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = F.softmax(att.masked_fill(mask == 0, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + linear(y, f"{p}.attn.c_proj")
        x = x + linear(F.gelu(linear(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc")), f"{p}.mlp.c_proj")
    logits = F.linear(ln(x, "transformer.ln_f"), sd["lm_head.weight"])
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def write_meta(path: Path, chars: str) -> Path:
    """nanoGPT's shakespeare_char/prepare.py format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)),
            "stoi": {c: i for i, c in enumerate(chars)}}
    path.write_bytes(pickle.dumps(meta))
    return path


def write_nanogpt_run(folder: Path, bias: bool = False, compiled: bool = True,
                      meta_beside: bool = True) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """A nanoGPT out_dir: ckpt.pt (as its train.py saves it) and, beside it, meta.pkl."""
    chars = "".join(sorted(set(TEXT)))
    args = {**ARGS, "vocab_size": len(chars), "bias": bias}
    sd = nanogpt_state(args, bias)
    saved = {f"_orig_mod.{k}" if compiled else k: v for k, v in sd.items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": saved, "optimizer": {"state": {}, "param_groups": []},
                "model_args": args, "iter_num": 250, "best_val_loss": torch.tensor(1.4697),
                "config": {"dataset": "tiny_char", "batch_size": 12, "learning_rate": 1e-3}},
               folder / "ckpt.pt")
    if meta_beside:
        write_meta(folder / "meta.pkl", chars)
    return folder / "ckpt.pt", args, sd


@pytest.mark.parametrize(("bias", "compiled"), [(False, True), (True, False)])
def test_loaded_model_computes_nanogpts_loss(tmp_path: Path, bias: bool, compiled: bool) -> None:
    ckpt, args, sd = write_nanogpt_run(tmp_path / "out", bias=bias, compiled=compiled)
    opened = load_for_sampling(tmp_path / "out", "cpu")  # the folder, as --checkpoint takes it
    assert opened.file == ckpt and opened.step == 250
    assert opened.tokenizer.vocab == "".join(sorted(set(TEXT)))
    ids = torch.tensor(opened.tokenizer.encode(TEXT))
    idx = torch.stack([ids[:32], ids[20:52]])
    targets = torch.stack([ids[1:33], ids[21:53]])
    with torch.no_grad():
        _, ours = opened.model(idx, targets)
        reference = nanogpt_loss(sd, args, idx, targets)
    assert ours is not None and reference.item() > 1.0  # a real loss, not a degenerate one
    assert abs(ours.item() - reference.item()) < 1e-4


def test_meta_is_found_where_nanogpts_sample_py_looks_or_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_nanogpt_run(tmp_path / "out", meta_beside=False)
    chars = "".join(sorted(set(TEXT)))
    with pytest.raises(CheckpointError, match="meta.pkl is not in"):
        load_checkpoint(tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    write_meta(tmp_path / "data" / "tiny_char" / "meta.pkl", chars)
    assert load_checkpoint(tmp_path / "out")["vocab"] == chars
    monkeypatch.chdir(tmp_path / "out")
    elsewhere = write_meta(tmp_path / "m" / "meta.pkl", chars)
    assert load_checkpoint(Path("ckpt.pt"), meta=elsewhere)["vocab"] == chars


def test_sample_and_explain_run_on_a_nanogpt_checkpoint(tmp_path: Path) -> None:
    write_nanogpt_run(tmp_path / "out")
    for extra in ([], ["--beam-width", "2"]):
        result = invoke("sample", "--checkpoint", str(tmp_path / "out"), "--prompt", "Speak",
                        "--max-new-tokens", "12", "--device", "cpu", "--seed", "1", *extra)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("Speak") and len(result.stdout) >= len("Speak") + 12
    result = invoke("explain", "--checkpoint", str(tmp_path / "out" / "ckpt.pt"), "--text",
                    "Speak, sir?", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"step": 250' in result.stdout


class RunsCode:
    """What a malicious meta.pkl holds: unpickling it would call Path.touch."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def test_a_meta_pkl_with_code_in_it_is_refused_without_running_it(tmp_path: Path) -> None:
    write_nanogpt_run(tmp_path / "out")
    marker = tmp_path / "pwned"
    (tmp_path / "out" / "meta.pkl").write_bytes(pickle.dumps(
        {"vocab_size": 3, "itos": {0: "a"}, "hook": RunsCode(marker)}))
    result = invoke("sample", "--checkpoint", str(tmp_path / "out"), "--device", "cpu")
    assert_one_line_error(result, "refused", "meta.pkl", "Python objects")
    assert result.exit_code == 2 and not marker.exists()


def test_a_vocabulary_size_mismatch_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    write_nanogpt_run(tmp_path / "out")
    write_meta(tmp_path / "out" / "meta.pkl", "abc")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for command in (["sample"], ["explain", "--text", "abc"]):
        result = invoke(*command, "--checkpoint", str(tmp_path / "out"), "--device", "cpu")
        assert_one_line_error(result, "vocabulary of", "but", "has 3 characters")
        assert result.exit_code == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_checkpoint_of_neither_format_names_what_it_has_and_lacks(tmp_path: Path) -> None:
    torch.save({"model": {}, "step": 3, "weights": {}}, tmp_path / "odd.pt")
    result = invoke("sample", "--checkpoint", str(tmp_path / "odd.pt"), "--device", "cpu")
    line = assert_one_line_error(result, "neither a chargpt-tui nor a nanoGPT checkpoint",
                                 "it has model, step, weights")
    assert "format_version" in line and "model_args" in line and result.exit_code == 2


def test_resuming_a_nanogpt_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    write_nanogpt_run(tmp_path / "out")
    corpus = tmp_path / "t.txt"
    corpus.write_text(TEXT * 20)
    result = invoke("train", "--data", str(corpus), "--resume", str(tmp_path / "out"),
                    "--max-iters", "1", "--device", "cpu")
    assert_one_line_error(result, "cannot resume a nanoGPT checkpoint")
