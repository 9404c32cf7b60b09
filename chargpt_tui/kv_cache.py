"""The KV cache: keys and values of the tokens seen so far, so sampling one more character
costs one position of attention instead of the whole context (see ``sampling.py``)."""

from __future__ import annotations

from typing import Protocol

import torch


class CacheShape(Protocol):
    """What the cache needs to know of a model: a :class:`~chargpt_tui.model.GPTConfig`."""

    n_layer: int
    n_head: int
    block_size: int
    rope: bool

    @property
    def head_size(self) -> int: ...


class LayerKV:
    """One layer's cached keys and values, (batch, n_head, block_size, head_size).

    With learned positions the cache fills up at ``block_size``. With rotary positions it keeps
    going as a ring: the newest key overwrites the oldest. Attention over the cache is a weighted
    sum over a *set* of keys, and each key already carries its position, so slot order is free.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, rolling: bool = False) -> None:
        self.k, self.v = k, v
        self.rolling = rolling
        self.length = 0  # filled slots
        self.seen = 0  # tokens appended since the reset: the next token's position

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        capacity, new = self.k.size(2), k.size(2)
        if self.length + new <= capacity:
            end = self.length + new
            self.k[:, :, self.length : end] = k
            self.v[:, :, self.length : end] = v
            self.length = end
        elif self.rolling and new == 1:
            slot = self.seen % capacity  # the oldest token's slot
            self.k[:, :, slot : slot + 1] = k
            self.v[:, :, slot : slot + 1] = v
        else:
            raise ValueError(f"the KV cache holds {capacity} positions")
        self.seen += new
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size.

    With learned positions the cache holds at most ``block_size`` tokens, and what happens past
    that is the sampler's policy (see sampling.py); with rotary positions it slides (a ring).
    """

    def __init__(self, config: CacheShape, batch_size: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (batch_size, config.n_head, config.block_size, config.head_size)
        self.layers = [
            LayerKV(torch.empty(shape, device=device, dtype=dtype),
                    torch.empty(shape, device=device, dtype=dtype), rolling=config.rope)
            for _ in range(config.n_layer)
        ]

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def seen(self) -> int:
        return self.layers[0].seen

    def reset(self) -> None:
        for layer in self.layers:
            layer.length = layer.seen = 0

    def reorder(self, parents: torch.Tensor) -> None:
        """Beam search: row ``i`` of the cache becomes a copy of row ``parents[i]``.

        ``parents`` may change the number of rows (the first step turns the prompt's one row
        into ``beam_width``). After that, only rows whose parent is another row are copied, and
        only their filled positions: a beam that extends itself keeps its keys and values.
        """
        rows = self.layers[0].k.size(0)
        if len(parents) != rows:
            for layer in self.layers:
                layer.k = layer.k.index_select(0, parents)
                layer.v = layer.v.index_select(0, parents)
            return
        moved = (parents != torch.arange(rows, device=parents.device)).nonzero().flatten()
        if len(moved) == 0:
            return
        sources = parents[moved]
        for layer in self.layers:
            filled = slice(0, layer.length)
            # The right-hand side is gathered into a new tensor first, so rows may swap.
            layer.k[moved, :, filled] = layer.k[sources, :, filled]
            layer.v[moved, :, filled] = layer.v[sources, :, filled]
