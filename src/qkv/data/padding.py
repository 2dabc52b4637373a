"""Turning lists of ids into padded batch tensors."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """Right-pad to the longest: list of B id lists -> (B, T_max) long tensor."""
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
