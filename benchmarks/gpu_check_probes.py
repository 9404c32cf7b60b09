"""The parts of ``benchmarks/gpu_check.py`` that import torch, each run in a fresh process:

    python benchmarks/gpu_check_probes.py env --device cuda
    python benchmarks/gpu_check_probes.py explain --device cuda --text "..." --run RUN_DIR ...

``env``: torch, CUDA and cuDNN versions, the device, its memory and bf16 support, and one
matmul on it. ``explain``: the explain views' computations (attention over a text, surprise
per character, the embeddings' PCA) for each checkpoint on the device, each compared with the
same computation on the CPU, and timed. One JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from chargpt_tui.checkpoint import load_for_sampling
from chargpt_tui.explain import attention_over, embedding_projection, surprise

T = TypeVar("T")


def probe_env(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "cuda_available": torch.cuda.is_available(),
        "device": device, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    target = torch.device(device)
    if target.type == "cuda":
        properties = torch.cuda.get_device_properties(target)
        info.update(device_name=properties.name,
                    capability=f"{properties.major}.{properties.minor}",
                    memory_gib=round(properties.total_memory / 2**30, 1),
                    device_count=torch.cuda.device_count(),
                    bf16=torch.cuda.is_bf16_supported(), nccl=nccl_version())
    else:
        info["device_name"] = platform.processor() or platform.machine()
    a = torch.randn(512, 512, device=target)
    started = time.perf_counter()
    product = float((a @ a.T).trace())  # reads back: the work is done
    info["first_matmul_s"] = round(time.perf_counter() - started, 4)
    info["matmul_finite"] = product == product and abs(product) != float("inf")
    return info


def nccl_version() -> str:
    """NCCL's version as torch reports it (a tuple in torch 2, an int before), or why not."""
    try:
        version = torch.cuda.nccl.version()
    except Exception as error:  # noqa: BLE001 - a missing NCCL is a finding, not a crash
        return f"unavailable ({type(error).__name__})"
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def timed(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """The result of the second call, and how long it took (the first warms up)."""
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - started


def views(run: str, device: str, text: str, tf32: bool) -> dict[str, Any]:
    """Attention, surprise and the embeddings' projection of one checkpoint on ``device``."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    opened = load_for_sampling(run, device, prefer_best=True)
    model, tokenizer = opened.model, opened.tokenizer
    ids, _ = tokenizer.encode_lenient(text)
    with torch.no_grad():
        attention, attention_s = timed(lambda: attention_over(model, tokenizer, ids),
                                       opened.device)
    scored, surprise_s = timed(lambda: surprise(model, tokenizer, ids), opened.device)
    projection, projection_s = timed(lambda: embedding_projection(model), opened.device)
    return {"attention": attention, "surprise": scored, "projection": projection,
            "seconds": {"attention": attention_s, "surprise": surprise_s,
                        "embeddings": projection_s},
            "rope": model.config.rope, "step": opened.payload.get("step")}


def largest_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def compare(run: str, device: str, text: str) -> dict[str, Any]:
    reference = views(run, "cpu", text, tf32=False)
    exact = views(run, device, text, tf32=False)
    app_like = views(run, device, text, tf32=True)  # training in the app turns TF32 on

    def nats(result: dict[str, Any]) -> list[float]:
        return [n for n in result["surprise"].nats if n is not None]

    def apart(result: dict[str, Any]) -> dict[str, float]:
        return {
            "attention_max_abs_diff": largest_difference(result["attention"].maps,
                                                         reference["attention"].maps),
            "surprise_mean_abs_diff": abs(result["surprise"].mean_nats
                                          - reference["surprise"].mean_nats),
            "surprise_max_abs_diff": max(abs(x - y) for x, y in zip(nats(result),
                                                                     nats(reference))),
            "embedding_max_abs_diff": float((result["projection"].points
                                             - reference["projection"].points).abs().max()),
        }

    rows = exact["attention"].maps[-1].sum(-1)
    return {
        "run": run, "step": exact["step"], "rope": exact["rope"],
        "characters": len(nats(exact)) + 1,
        **apart(exact),
        "tf32": apart(app_like),
        "attention_rows_sum_to_1": float((rows - 1).abs().max()) < 1e-4,
        "attention_causal": all(float(m.triu(1).abs().max()) == 0.0
                                for m in exact["attention"].maps),
        "mean_nats": exact["surprise"].mean_nats,
        "explained_variance": list(exact["projection"].explained),
        "seconds_on_device": exact["seconds"], "seconds_on_cpu": reference["seconds"],
    }


def probe_explain(device: str, text: str, runs: list[str]) -> dict[str, Any]:
    return {"device": device, "checkpoints": [compare(run, device, text) for run in runs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("env", "explain"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--text", default="")
    parser.add_argument("--run", action="append", default=[], help="a run folder (repeatable)")
    args = parser.parse_args()
    result = (probe_env(args.device) if args.probe == "env"
              else probe_explain(args.device, args.text, args.run))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
