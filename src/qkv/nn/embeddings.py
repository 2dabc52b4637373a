"""Token embeddings and positional information (sec 3.4, 3.5)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from qkv.nn.block import dropout

PositionScheme = Literal["sinusoidal", "learned", "none"]


def sinusoid_table(n_positions: int, d_model: int) -> Tensor:
    """(n_positions, d_model): PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), sec 3.5.

    Sines on even dimensions, cosines on odd ones; dimension pair i has wavelength 2*pi*10000^(2i/d).
    """
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (n_positions, ceil(d/2))
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed encodings; the table grows on demand, since the formula extrapolates to any length."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", sinusoid_table(max_len, d_model), persistent=False)

    def forward(self, offset: int, length: int) -> Tensor:
        """Encodings of positions offset .. offset+length-1, (length, D)."""
        if offset + length > self.table.size(0):
            self.table = sinusoid_table(2 * (offset + length), self.d_model).to(self.table.device)
        return self.table[offset : offset + length]

    def rows(self, positions: Tensor) -> Tensor:
        """Encodings of the given (T,) positions, (T, D); the caller keeps them inside the table."""
        return self.table[positions]


class LearnedPositions(nn.Module):
    """One trained vector per position (the paper found it "nearly identical", sec 3.5, Table 3 (E))."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, offset: int, length: int) -> Tensor:
        if offset + length > self.weight.size(0):
            raise ValueError(f"position {offset + length - 1} is beyond the {self.weight.size(0)} learned positions")
        return self.weight[offset : offset + length]

    def rows(self, positions: Tensor) -> Tensor:
        """Vectors of the given (T,) positions, (T, D); the caller keeps them below max_len."""
        return self.weight[positions]


class Embeddings(nn.Module):
    """tokens (B, T) -> (B, T, D): token vectors (times sqrt(d_model) when `scale`, sec 3.4) plus
    positions, then dropout (sec 5.4: "to the sums of the embeddings and the positional encodings")."""

    def __init__(
        self, vocab_size: int, d_model: int, positions: PositionScheme, max_len: int, dropout: float, scale: bool
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        # std d^-1/2: after the sqrt(d) scale the vectors have unit-size entries, and as a tied output
        # projection the initial logits stay near zero.
        nn.init.normal_(self.tokens.weight, std=d_model**-0.5)
        self.scale = math.sqrt(d_model) if scale else 1.0
        self.positions: nn.Module | None = {
            "sinusoidal": lambda: SinusoidalPositions(d_model, max_len),
            "learned": lambda: LearnedPositions(d_model, max_len),
            "none": lambda: None,
        }[positions]()
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """offset: number of positions before `tokens` (the cached prefix when decoding step by step);
        positions: the (T,) absolute positions as a tensor instead (a CUDA graph replays one step for
        every position, so the position cannot be a Python number baked into it)."""
        x = self.tokens(tokens)
        if self.scale != 1.0:
            x = x * self.scale
        if self.positions is not None:
            x = x + (self.positions(offset, tokens.size(1)) if positions is None else self.positions.rows(positions))
        return dropout(self.dropout, x)
