"""The encoder pass of translation decoding, run in groups of rows of similar source length.

A batch is padded to its longest source, and the encoder computes every padded position as if it
were a word: each position's products cost the same. Sorting a file's sentences by length keeps that
small for most batches, but a batch at the long tail spans many lengths (Multi30k test2016's last
batch of 64 runs from 19 to 36 tokens): over the 512 sentences of the decoding benchmark the encoder
computed 18% more positions than there are tokens. Each group here is cut to its own longest source.
An encoded row does not depend on the rows beside it, nor on padding after it (its keys are masked),
so the result is the same memory at every real position (padded ones hold other values, which the
cross-attention's mask hides, as it hides the encoder's values there). Greedy decoding of the
benchmark's sentences ran 1.015-1.023x faster in four alternating runs, beam 4 1.006x, with the same
translations (docs/PERFORMANCE.md, levers table, session 34)."""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.models.seq2seq import Encoded
from qkv.nn.masks import padding_mask

MIN_GROUP = 8  # rows: a smaller group's products run further from the machine's peak
MIN_SAVING = 0.1  # halve a group only where that saves a tenth of its padded positions: each group costs calls


def source_lengths(src: Tensor, pad_id: int) -> Tensor:
    """(B, S) ids -> (B,) the number of positions up to each row's last non-padding token."""
    real = src != pad_id
    last = real.flip(1).int().argmax(1)  # positions after the last real token
    return torch.where(real.any(1), src.size(1) - last, 0)


def length_groups(lengths: list[int]) -> list[tuple[int, int]]:
    """Ascending lengths -> [start, end) ranges that cover them, halving a range while both halves keep
    MIN_GROUP rows and padding each half to its own longest saves MIN_SAVING of the range's positions."""

    def split(lo: int, hi: int) -> list[tuple[int, int]]:
        mid = (lo + hi) // 2
        if mid - lo < MIN_GROUP or hi - mid < MIN_GROUP:
            return [(lo, hi)]
        whole = (hi - lo) * lengths[hi - 1]
        halves = (mid - lo) * lengths[mid - 1] + (hi - mid) * lengths[hi - 1]
        if whole - halves < MIN_SAVING * whole:
            return [(lo, hi)]
        return split(lo, mid) + split(mid, hi)

    return split(0, len(lengths)) if lengths else []


def encode_by_length(model, src: Tensor) -> Encoded:
    """`model.encode(src)` for decoding: src (B, S) padded ids -> memory (B, S, D), the same at every
    real position, and the (B, 1, 1, S) padding mask; rows encoded in `length_groups` of similar length."""
    pad = model.config.pad_id
    lengths = source_lengths(src, pad)
    order = lengths.argsort()
    ascending = lengths[order].tolist()
    groups = length_groups(ascending)
    if len(groups) < 2:
        return model.encode(src)
    memory = None
    for lo, hi in groups:
        rows, length = order[lo:hi], max(ascending[hi - 1], 1)  # (a row of padding alone keeps one)
        part = model.encode(src[rows, :length]).memory  # (rows, length, D)
        if memory is None:
            memory = part.new_zeros(src.size(0), src.size(1), part.size(-1))
        memory[rows, :length] = part
    return Encoded(memory, padding_mask(src, pad), None)
