"""Language-modelling data: the token ids of one or more text files, cut into random windows."""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.data.text import DataError


class LMData:
    """ids of the whole corpus; the first (1 - val_fraction) is training data, the rest validation
    (a contiguous split, so no validation window overlaps a training one)."""

    def __init__(self, ids: list[int], val_fraction: float, block_size: int, source: str = "the corpus") -> None:
        """source: what the ids were read from, for the error when a split is too short for one window."""
        data = torch.tensor(ids, dtype=torch.long)
        n_val = int(len(data) * val_fraction)
        self.train, self.val = data[: len(data) - n_val], data[len(data) - n_val :]
        self.block_size = block_size
        for name, split in (("training", self.train), ("validation", self.val if val_fraction > 0 else self.train)):
            if len(split) <= block_size:
                raise DataError(
                    f"{source}: the {name} split has {len(split)} tokens, not more than block_size={block_size}"
                    " (give more text, or a smaller model.block_size)"
                )

    def batch(self, split: str, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Random windows: inputs x (B, T) and targets y (B, T), y = x shifted left by one."""
        data = self.train if split == "train" else self.val
        start = torch.randint(len(data) - self.block_size, (batch_size,), generator=generator)
        idx = start[:, None] + torch.arange(self.block_size + 1)  # (B, T+1)
        window = data[idx]
        return window[:, :-1], window[:, 1:]
