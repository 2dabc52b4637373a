"""The KV cache for incremental decoding, passed explicitly (STYLE principle 5).

During generation, position t's self-attention needs the keys and values of positions 0..t of every
decoder layer. Recomputing them each step costs O(T^2) projections; the cache keeps them instead.
Cross-attention keys and values depend only on the encoder output, so they are computed once.

The self-attention buffers are allocated with spare room and grow by doubling, so a decoding step
writes into existing memory instead of concatenating (which would reallocate every step).
"""

from __future__ import annotations

from torch import Tensor


class LayerCache:
    """Keys and values of one layer.

    k, v: (B, H, capacity, d_head) buffers whose first `length` positions are filled.
    cross_k, cross_v: (B, H, S, d_head) encoder-side keys/values, or None before the first step.
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
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def _grow(self, like: Tensor, capacity: int) -> None:
        b, h, _, d = like.shape
        k = like.new_empty(b, h, capacity, d)
        v = like.new_empty(b, h, capacity, d)
        if self.k is not None:
            k[:, :, : self.length] = self.k[:, :, : self.length]
            v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search keeps the surviving hypotheses' histories)."""
        for name in ("k", "v", "cross_k", "cross_v"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.index_select(0, index))


class KVCache:
    """Caches of every layer of one decoder stack; `length` is the number of positions seen."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def reorder(self, index: Tensor) -> None:
        """index: (B_new,) rows of the current batch to keep, in their new order."""
        for layer in self.layers:
            layer.reorder(index)
