"""The KV cache for incremental decoding, passed explicitly (STYLE principle 5).

During generation, position t's self-attention needs the keys and values of positions 0..t of every
decoder layer. Recomputing them each step costs O(T^2) projections; the cache keeps them instead.
Cross-attention keys and values depend only on the encoder output, so they are computed once.

The self-attention buffers are allocated with spare room and grow by doubling, so a decoding step
writes into existing memory instead of concatenating (which would reallocate every step).
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerCache:
    """Keys and values of one layer.

    k, v: (B, H, capacity, d_head) buffers whose first `length` positions are filled.
    cross_k, cross_v: (B_m, H, S, d_head) encoder-side keys/values, or None before the first step; B_m
    is B, or B / K in beam search, where a sentence's K beams share one encoder row.
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0
        self.cross_k: Tensor | None = None
        self.cross_v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, H, T, d_head) new keys/values; return all so far, (B, H, length, d_head)."""
        t = k.size(2)
        end = self.length + t
        if self.k is None or end > self.k.size(2):
            self._grow(k, max(end, 2 * (0 if self.k is None else self.k.size(2)), 16))
        # narrow + copy_ rather than slice assignment: Python's indexing costs more per call
        self.k.narrow(2, self.length, t).copy_(k)
        self.v.narrow(2, self.length, t).copy_(v)
        self.length = end
        return self.k.narrow(2, 0, end), self.v.narrow(2, 0, end)

    def _grow(self, like: Tensor, capacity: int) -> None:
        b, h, _, d = like.shape
        k = like.new_empty(b, h, capacity, d)
        v = like.new_empty(b, h, capacity, d)
        if self.k is not None:
            k[:, :, : self.length] = self.k[:, :, : self.length]
            v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v

    def reorder(self, index: Tensor, cross_index: Tensor | None = None) -> None:
        """Select batch rows: `index` for the self-attention history (beam search keeps the surviving
        hypotheses'), `cross_index` for the encoder-side keys/values (None: they stay as they are,
        which is right while no sentence has left the batch: all beams of a sentence share them)."""
        if self.k is not None:
            filled = slice(0, self.length)  # copy what is filled, not the spare capacity
            # room for one more position, not the old capacity: beam search reorders after every step,
            # so the next append fills the buffer exactly (a longer append grows it as usual). Smaller,
            # packed buffers made beam decoding 1.07-1.08x faster end to end (benchmarks/levers/
            # decode_steps.py --base 6fe217f); alone, the copy and one-query attention each gain a few
            # percent (benchmarks/levers/decode_ops.py), the rest is memory traffic
            _, h, _, d = self.k.shape
            k = self.k.new_empty(len(index), h, self.length + 1, d)
            v = self.v.new_empty(len(index), h, self.length + 1, d)
            # selected straight into the new buffers: one copy instead of index_select's and then ours
            torch.index_select(self.k[:, :, filled], 0, index, out=k[:, :, filled])
            torch.index_select(self.v[:, :, filled], 0, index, out=v[:, :, filled])
            self.k, self.v = k, v
        if cross_index is not None and self.cross_k is not None:
            self.cross_k = self.cross_k.index_select(0, cross_index)
            self.cross_v = self.cross_v.index_select(0, cross_index)


class KVCache:
    """Caches of every layer of one decoder stack; `length` is the number of positions seen."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reorder(self, index: Tensor, cross_index: Tensor | None = None) -> None:
        """index: (B_new,) rows of the current batch to keep, in their new order; cross_index likewise
        for the encoder-side keys/values, when they must change (see LayerCache.reorder)."""
        for layer in self.layers:
            layer.reorder(index, cross_index)


class StaticLayerCache:
    """Keys and values of one self-attention layer in buffers that never move or change shape, for
    a step replayed as a CUDA graph (`qkv.decoding.graphed`): the graph records buffer addresses and
    shapes once, so the write position must live in a tensor and the buffers must span the whole
    context window. k, v: (B, H, capacity, d_head), allocated at the first append; slots past the
    newest position hold stale entries, which `masks.position_mask` hides. Where to write and how many
    slots to return come from the owning `StaticKVCache` (`positions`, `window`)."""

    def __init__(self, owner: StaticKVCache) -> None:
        self.owner = owner
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write (B, H, T, d_head) keys/values at the owner's `positions`; return the first `window`
        slots of both, (B, H, window, d_head)."""
        if self.k is None:
            b, h, _, d = k.shape
            cap = self.owner.capacity
            self.k, self.v = k.new_zeros(b, h, cap, d), v.new_zeros(b, h, cap, d)
        positions, window = self.owner.positions, self.owner.window
        self.k.index_copy_(2, positions, k)
        self.v.index_copy_(2, positions, v)
        return self.k[:, :, :window], self.v[:, :, :window]


class StaticKVCache:
    """Fixed-size caches of every layer of a decoder-only stack (self-attention only: GPT).

    `positions` (T,) says where the next forward's T tokens sit; `window` how many slots its attention
    reads, a fixed length per recorded graph so that early steps do not read the whole context (all
    positions must be below it). Set both with `at` before each call.
    """

    def __init__(self, n_layers: int, capacity: int, positions: Tensor) -> None:
        self.capacity = self.window = capacity
        self.positions = positions
        self.layers = [StaticLayerCache(self) for _ in range(n_layers)]

    def at(self, positions: Tensor, window: int) -> StaticKVCache:
        """Point the next forward at `positions` (T,), a long tensor on the model's device, reading
        the first `window` slots (at most the capacity)."""
        self.positions, self.window = positions, window
        return self
