"""Forms of a weight made once for a block of inference and dropped at its end: oneDNN's packed layout
(`linear.packed_weight`), the output layer in 8-bit integers (`qkv.decoding.argmax`), a speculative
draft's 8-bit rows (`linear.draft_rows`).

Why a block and not a cache on the weight: a copy kept across calls could not tell that its weight
had changed, since PyTorch's fused optimisers and writes through `.data` update weights in place
without moving their version counter. While decoding, weights do not change, so greedy decoding, beam
search, `translate_lines` and speculative generation each open one block for their whole call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
PACKED_BYTES = 2**28  # at most 256 MB of copies in a block: all of a model of up to 64M parameters packed

# Per thread (two threads may decode at once): inside a packed_weights() block, `copies` maps
# (id(weight), kind) to (weight, copy, bytes); outside one it is absent. `draft` is True inside a
# draft_products() block.
_blocks = threading.local()


def block_copies() -> dict[tuple[int, str], tuple[Tensor, object, int]] | None:
    """This thread's block's copies, or None outside a `packed_weights()` block."""
    return getattr(_blocks, "copies", None)


@contextmanager
def packed_weights() -> Iterator[None]:
    """A block (or, as a decorator, a function) whose inference products may pack each weight once and
    reuse it; the copies are dropped at its end. The weights must not change inside it, as they do not
    while decoding. Blocks nest: an inner one uses the outer one's copies."""
    if block_copies() is not None:
        yield
        return
    _blocks.copies = {}
    try:
        yield
    finally:
        del _blocks.copies


def block_copy(weight: Tensor, kind: str, make: Callable[[Tensor], T], nbytes: int) -> T | None:
    """`make(weight)` (a form of the weight named `kind`, of `nbytes` bytes), made on its first use in
    this thread's `packed_weights()` block and kept to its end; None outside one, or when the block's
    copies would pass PACKED_BYTES."""
    copies = block_copies()
    if copies is None:
        return None
    entry = copies.get((id(weight), kind))
    if entry is not None and entry[0] is weight:
        return entry[1]
    if sum(e[2] for e in copies.values()) + nbytes > PACKED_BYTES:
        return None
    with torch.no_grad():
        copy = make(weight.detach())
    copies[(id(weight), kind)] = (weight, copy, nbytes)  # the weight kept alive: its id cannot be reused
    return copy


@contextmanager
def draft_products() -> Iterator[None]:
    """A block whose single-row inference products of large weights use 8-bit integer copies of the
    weights (`linear.draft_rows`): an approximation, for a speculative draft only
    (`qkv.decoding.speculative`), whose tokens the float32 model checks. The copies are those of the
    enclosing `packed_weights()` block (it opens one if there is none)."""
    previous, _blocks.draft = drafting(), True
    try:
        with packed_weights():
            yield
    finally:
        _blocks.draft = previous


def drafting() -> bool:
    """Whether this thread is inside a `draft_products()` block."""
    return getattr(_blocks, "draft", False)
