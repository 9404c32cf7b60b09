"""Several training processes with DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m chargpt_tui train ...`` starts N copies of the ordinary ``train``
command and tells each one who it is through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Each
process builds the same model (same seed), draws its own batches (seed + rank), and DDP averages
the gradients, so every rank takes the same optimizer step: N processes act like one process with
an N times larger batch.

Everything that is not a gradient has to be agreed explicitly, or ranks fall out of step and the
next collective call waits forever:

- stop and save requests: :func:`agree_on_requests` takes the MAX of every rank's flags each step,
  so a signal seen by one rank stops all of them at the same step;
- the loss: :func:`mean_over_ranks`, so all ranks agree when it turns non-finite;
- checkpoints: only rank 0 writes, but every rank joins :func:`gather_rank_states` (its RNG
  states, so a resume continues each rank's own batch stream) and :func:`max_parameter_drift`
  (a check that the replicas really are identical).

Rank 0 alone evaluates, prints and writes files; it evaluates on the unwrapped module, because a
forward through the DDP wrapper on one rank waits for the others.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from chargpt_tui.device import pick_device
from chargpt_tui.errors import ConfigError
from chargpt_tui.torchrun import launched_by_torchrun

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Who this process is in a torchrun job."""

    rank: int
    local_rank: int  # index on this machine: picks the GPU
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistContext | None:
    """The context of the running process group, or None in an ordinary single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistContext(dist.get_rank(), local_rank, dist.get_world_size(), device)


def _device_for(requested: str, local_rank: int) -> torch.device:
    """One GPU per process (``cuda:LOCAL_RANK``) when CUDA is there, else the CPU."""
    if requested.startswith("cuda:"):
        raise ConfigError(f"--device {requested} cannot be used under torchrun",
                          "pass --device cuda: each process takes cuda:LOCAL_RANK")
    if requested == "mps":
        raise ConfigError("torchrun training does not support MPS", "pass --device cpu")
    device = pick_device(requested)  # unknown names and missing CUDA fail here as usual
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here",
                "start at most one process per GPU (--nproc_per_node)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")  # also "auto" on a Mac: DDP has no MPS backend


class Launch:
    """What the ``train`` command needs to know about how it was started.

    In a plain process every question has the single-process answer, so the command has one
    code path for both cases.
    """

    def __init__(self, context: DistContext | None, device: str) -> None:
        self.context = context
        self.device = str(context.device) if context else device

    @property
    def is_main(self) -> bool:
        return self.context is None or self.context.is_main

    def leader_first(self, function: Callable[[], T]) -> T:
        """Run ``function`` on each machine's first process, then on the others.

        Loading the data may download it into the shared cache: one process per machine does
        that, the rest find it cached. If the leader fails (bad option, missing file), it reports
        the error and the others exit quietly instead of waiting forever.
        """
        context = self.context
        if context is None:
            return function()
        failure: BaseException | None = None
        result: T | None = None
        if context.local_rank == 0:
            try:
                result = function()
            except Exception as error:  # noqa: BLE001 - re-raised below, after telling the rest
                failure = error
        (leader_failed,) = _max_over_ranks([int(failure is not None)], context.device)
        if failure is not None:
            raise failure
        if leader_failed:
            raise SystemExit(2)  # a leader printed the reason; one message is enough
        return function() if context.local_rank != 0 else result  # type: ignore[return-value]


@contextlib.contextmanager
def launch(device: str = "auto") -> Iterator[Launch]:
    """Join the torchrun job if there is one (NCCL on GPUs, gloo on CPU) and leave it cleanly."""
    if not launched_by_torchrun():
        yield Launch(None, device)
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    torch_device = _device_for(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)  # before init: NCCL binds each rank to its GPU
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    try:
        context = current()
        assert context is not None
        yield Launch(context, device)
    finally:
        dist.destroy_process_group()


# -- collectives the trainer uses ----------------------------------------------------------------


def _max_over_ranks(values: list[int], device: torch.device) -> list[int]:
    flags = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags.tolist()


def agree_on_requests(context: DistContext, stop_code: int | None, save: bool
                      ) -> tuple[int | None, bool]:
    """Combine every rank's (stop requested with exit code, save requested) into one answer.

    ``stop_code`` is None when this rank has no stop request. One tiny all-reduce per step; all
    ranks get the same answer, so they stop (or save) at the same step.
    """
    # +1 so that a stop with exit code 0 still counts as a stop
    stop_plus_one, save_flag = _max_over_ranks(
        [0 if stop_code is None else stop_code + 1, int(save)], context.device)
    return (stop_plus_one - 1 if stop_plus_one else None), bool(save_flag)


def mean_over_ranks(context: DistContext, value: float) -> float:
    """The mean of a float over ranks (a NaN anywhere makes it NaN everywhere)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item() / context.world_size


def gather_rank_states(context: DistContext, state: dict[str, torch.Tensor]
                       ) -> list[dict[str, torch.Tensor]]:
    """Every rank's ``state`` (CPU tensors of the same shapes on all ranks: RNG states, the
    step), in rank order, as CPU tensors. Tensors rather than objects: object collectives
    need NumPy, which chargpt-tui does not."""
    gathered: list[dict[str, torch.Tensor]] = [{} for _ in range(context.world_size)]
    for name, tensor in state.items():
        mine = tensor.to(context.device)
        parts = [torch.empty_like(mine) for _ in range(context.world_size)]
        dist.all_gather(parts, mine)
        for rank, part in enumerate(parts):
            gathered[rank][name] = part.cpu()
    return gathered


@torch.no_grad()
def max_parameter_drift(context: DistContext, model: torch.nn.Module) -> float:
    """The largest difference between any parameter on any rank and the same one on rank 0.

    DDP keeps the replicas identical by construction; this measures it. A non-zero value means a
    bug made the ranks diverge (for example a gradient sync skipped on the wrong micro-step).
    """
    mine = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    drift = (mine - reference).abs().max().reshape(1).double()
    dist.all_reduce(drift, op=dist.ReduceOp.MAX)
    return drift.item()


def wrap_model(context: DistContext, model: torch.nn.Module) -> torch.nn.Module:
    """The DDP wrapper: the constructor also copies rank 0's weights to every rank.

    The only buffers are the constant causal masks, so broadcasting them before every forward
    would be wasted work.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # torch ≥ 2.13 renamed the option (the old name still works, with a warning)
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_buffer_sync: dict[str, Any] = {
        "forward_sync_buffers" if newer else "broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=device_ids, **no_buffer_sync)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (for evaluation on rank 0 alone), else ``model``."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def gradient_sync(model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce on all but the last micro-step of gradient accumulation.

    Must wrap the forward as well as the backward: DDP decides at forward time whether the
    following backward syncs (deciding after the forward made ranks drift apart).
    """
    from torch.nn.parallel import DistributedDataParallel

    if sync or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()
