"""Where the math runs: the device, torch's CPU threads, mixed precision and TF32.

Shared by training, sampling and the distributed launcher, so none of them imports another
just to pick a device.
"""

from __future__ import annotations

import contextlib

import torch

from chargpt_tui.errors import ConfigError


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple's MPS, then CPU. An explicit device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"unknown device {requested!r}", "use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available here",
                          "use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device {requested}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)", "use --device cuda:0 (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps was asked for but MPS is not available here",
                          "use --device cpu (or auto)")
    return device


def set_torch_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads for this process (None keeps torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError("--threads must be at least 1")
    torch.set_num_threads(threads)


def autocast_context(device: torch.device, precision: str = "auto"
                     ) -> contextlib.AbstractContextManager:
    """bf16 autocast (fp32's range, so no loss scaling) on CUDA, and on a CPU when asked for.

    ``precision``: ``auto`` (bf16 on CUDA, fp32 on CPU: many CPUs run bf16 matmuls far slower),
    ``bf16`` or ``fp32``.
    """
    if device.type == "cuda" and precision != "fp32" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def use_tf32_matmuls() -> None:
    """On CUDA, let float32 matmuls and convolutions use TF32 tensor cores (Ampere and newer):
    several times the fp32 speed at a 10-bit mantissa, which training does not notice. It
    speeds up what bf16 autocast leaves in fp32, and sampling, whose snapshot runs in fp32."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
