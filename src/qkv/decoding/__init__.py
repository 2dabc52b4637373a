"""Decoding: greedy and beam search for the encoder-decoder, sampling for GPT (STYLE principle 9:
the strategies live outside the models)."""

from __future__ import annotations

from typing import Iterable


def check_ids(ids: Iterable[int], vocab_size: int, what: str) -> None:
    """Refuse an id the model has no embedding for, naming it (the embedding itself would fail with
    PyTorch's "index out of range in self"). what: "prompt", "source", ..."""
    for i in ids:
        if not 0 <= i < vocab_size:
            raise ValueError(f"{what} token id {i} is outside the model's vocabulary (0 to {vocab_size - 1})")
