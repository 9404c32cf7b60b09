"""Optimizers: the lecture's AdamW, and Muon for the hidden weight matrices (the fast recipe).

**Muon** (Keller Jordan, 2024; "MomentUm Orthogonalized by Newton–Schulz") takes SGD's momentum
for a weight matrix and replaces it by the nearest *orthogonal* matrix — the same directions, all
singular values set to 1 — before the step. A raw gradient of a transformer matrix is dominated by
a few directions; orthogonalising gives the rare directions as much step as the common ones, and
that learns more per token. It suits 2-D weights inside the blocks only: embeddings, the output
layer and gains keep AdamW (as in the modded-nanogpt speedrun, where Muon cut steps ~1.5×).
"""

from __future__ import annotations

from typing import Any

import torch

# Coefficients of the quintic Newton–Schulz iteration tuned for speed (modded-nanogpt): it pushes
# every singular value into roughly [0.7, 1.2] in 5 steps rather than exactly to 1 — close enough
# for an update direction, and far cheaper than an SVD.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately ``U Vᵀ`` for ``update = U S Vᵀ``: singular values driven towards 1.

    Works on the last two dimensions, so a stack of same-shaped matrices goes in one batch.
    """
    a, b, c = NS_COEFFICIENTS
    x = update.bfloat16() if update.is_cuda else update.float()
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide side: X Xᵀ is then the smaller square
        x = x.mT
    # The spectral norm ≤ the Frobenius norm: dividing by it puts every singular value ≤ 1.
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.mT
    return x.to(update.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised (for 2-D weights only).

    Each update is scaled by ``sqrt(max(1, rows / cols))`` so tall and wide matrices change their
    outputs by comparable amounts. Its state (one momentum buffer per matrix) is plain tensors, so
    it checkpoints and resumes bitwise like AdamW.
    """

    def __init__(self, params: Any, lr: float = 0.02, momentum: float = 0.95,
                 nesterov: bool = True, ns_steps: int = 5, weight_decay: float = 0.0) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for param in group["params"]:
                if param.dim() != 2:
                    raise ValueError("Muon is for 2-D weight matrices; use AdamW for the rest")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            # Same-shaped matrices (every layer's QKV, say) are orthogonalised together: one
            # batched matrix product instead of one per layer (per-op overhead rules on a CPU).
            by_shape: dict[torch.Size, list[torch.Tensor]] = {}
            for param in group["params"]:
                if param.grad is not None:
                    by_shape.setdefault(param.shape, []).append(param)
            for shape, params in by_shape.items():
                grads = [param.grad for param in params if param.grad is not None]
                buffers = [self.state[param].setdefault("momentum_buffer", torch.zeros_like(param))
                           for param in params]
                torch._foreach_mul_(buffers, group["momentum"])
                torch._foreach_add_(buffers, grads)
                if group["nesterov"]:
                    update = torch.stack(grads).add_(torch.stack(buffers), alpha=group["momentum"])
                else:
                    update = torch.stack(buffers)
                update = orthogonalize(update, group["ns_steps"])
                if group["weight_decay"]:
                    torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
                scale = max(1.0, shape[0] / shape[1]) ** 0.5
                torch._foreach_add_(params, list(update.unbind(0)), alpha=-group["lr"] * scale)


class MuonWithAdamW:
    """Muon for the hidden matrices and AdamW for the rest, behind one optimizer interface.

    The training loop sees the usual ``param_groups`` / ``step`` / ``zero_grad`` /
    ``state_dict``; a checkpoint holds both optimizers' states.
    """

    def __init__(self, muon: Muon, adamw: torch.optim.AdamW) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.adamw.param_groups, *self.muon.param_groups]

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("the checkpoint's optimizer is not Muon + AdamW")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
