"""Greedy decoding's next token: the index of the largest score of the output layer, exactly as float32
would pick it, computed mostly with 8-bit integers.

At batch 64 the Multi30k model's output layer (8,000 x 256) was about a fifth of greedy decoding's time,
and greedy needs only each row's largest score, not the scores. Products of 8-bit integers run several
times faster than float32 ones where the processor has AVX512-VNNI (64 x 256 x 8,000: 0.36 ms through
`torch._int_mm` against 1.32 ms for float32 through oneDNN with a packed weight, session 30's Zen 4,
one-off timings). So every score is first estimated from the input row and the weight rounded to
integers (a scale per input row, one for the weight), with a bound on how far each estimate can be
from the float32 score; only the scores that could still be the largest (1.8 a row on average for the Multi30k model, at
most 29, over the 6,760 steps of 512 test2016 sentences) are computed again in float32
(`screened_argmax`, qkv/nn/screened_argmax.cpp, which derives the bound), and the first largest of those
is the answer.

Batch-1 greedy generation from a GPT (`qkv.decoding.generate`) takes the same route for its one row a
token: there reading the weight is the cost, and GPT-2's output layer is 154 MB of float32 against
39 MB of integers (`integer_argmax`).

The bound holds for any inputs, as long as the integer sums are exact (they are: at most d 127^2, far
inside int32). Scores that round the same in every float32 summation order are picked the same as a
float32 product would; near-ties that float32 orders disagree on (MKL against oneDNN, as today) may go
either way, as between any two float32 implementations.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor, nn

from qkv.nn import linear as qlinear
from qkv.nn import native, weight_copies

FEW_ROWS = 16  # rows whose integer scores `int8_matvec` computes (more go to `torch._int_mm`)
MIN_SCREENED = 2**20  # weights of at least this many numbers (the Multi30k output layer has 2,048,000)
enabled = True  # False: always float32 scores (for `benchmarks/levers/decoding_kernels.py`)


def first_argmax(x: Tensor, chunk: int = 64) -> Tensor:
    """(R, V) -> (R,): the index of each row's largest entry, the first of equal ones (as `argmax`).
    PyTorch 2.13's CPU `max(-1)` and `argmax` take 230-370 us over (64, 8,000) scores, where `amax` takes
    17 (session 28's Zen 4): so the maxima of chunks of 64 entries first, then the first chunk holding the
    row's maximum, then the first maximum inside it, 75 us in all (one-off timing)."""
    r, v = x.shape
    if v % chunk or v < 4 * chunk or x.stride(-1) != 1:
        return x.max(-1).indices
    chunks = x.view(r, v // chunk, chunk)
    best = chunks.amax(-1).max(-1).indices  # (R,) the first chunk whose maximum is the row's
    return best * chunk + chunks[torch.arange(r, device=x.device), best].max(-1).indices


@cache
def integer_products() -> bool:
    """Where 8-bit integer products have the processor's dot-product instructions (AVX512-VNNI), with
    PyTorch's `_int_mm`, on x86 processors of either vendor: measured on session 30's AMD Zen 4 and on
    session 35's Intel Xeon (AVX-512, AMX), where greedy decoding of 512 test2016 sentences ran 758.5
    against 684.7 sentences/s with float32 scores (1.108x, the same translations; a one-off script
    alternating the two in one process)."""
    return qlinear.x86_with_both() and "avx512_vnni" in native.cpu_flags() and hasattr(torch, "_int_mm")


def screens(x: Tensor, weight: Tensor) -> bool:
    """Whether `output_argmax` takes the integer route for these tensors (rows x, weight)."""
    return (
        enabled
        and x.dim() == 2
        and weight.numel() >= MIN_SCREENED
        and qlinear.current_kernel() == "auto"
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and qlinear.kernels_apply(x, weight)
        and integer_products()
        and native.kernel("screened_argmax") is not None
    )


class IntegerWeight(NamedTuple):
    """An output layer's weight rounded to 8-bit integers, W ~ t p, with the largest row sum |w_j|_1
    rounded up: what the screening's bound needs (qkv/nn/integer_scores.cpp, `quantize_weight`)."""

    p: Tensor  # (V, D) int8
    t: float  # a float32 value
    l1: float


def quantized(weight: Tensor) -> IntegerWeight:
    """weight (V, D) float32 -> its IntegerWeight: two parallel passes over the weight (26 ms for GPT-2's
    50,257 x 768 output layer, 4-7 ms for the Multi30k model's 8,000 x 256, session 38's Xeon)."""
    return IntegerWeight(*native.kernel("quantize_weight")(weight.detach()))


def integer_argmax(x: Tensor, weight: Tensor, bias: Tensor | None, integer: IntegerWeight) -> Tensor:
    """x (R, D) -> (R,): the index of each row's largest score x W^T + b, screened with `integer`
    (`quantized(weight)`). Up to FEW_ROWS rows' integer scores come from qkv's own loop (`int8_matvec`:
    batch-1 generation reads the whole integer weight each token, 2.1 against `_int_mm`'s 3.0-3.8 ms
    for GPT-2's out of cache, and a speculative check a handful of rows), more rows' from `torch._int_mm`."""
    q, scale = native.kernel("quantize_rows")(x)  # x ~ scale q, row by row
    few = x.size(0) <= FEW_ROWS
    acc = native.kernel("int8_matvec")(q, integer.p) if few else torch._int_mm(q, integer.p.t())  # (R, V) exact
    return native.kernel("screened_argmax")(acc, q, scale, x, weight, bias, integer.t, integer.l1)


def row_screening(output: nn.Linear) -> IntegerWeight | None:
    """For batch-1 greedy generation, which keeps its integer weight itself (no `packed_weights()`
    block lives across its steps): `quantized(output.weight)` where `output_argmax` would screen a
    single row of the decoder's states, None where it would not."""
    row = output.weight.new_empty(1, output.weight.size(1))  # a row like the states the steps will give
    with torch.inference_mode():
        return quantized(output.weight) if screens(row, output.weight) else None


def output_argmax(x: Tensor, output: nn.Linear) -> Tensor:
    """x: (R, D) decoder states -> (R,) the index of each row's largest `output(x)` score, the first of
    equal ones. Screened with integers inside a `packed_weights()` block where `screens` holds (the
    integer weight is made once per block); float32 scores otherwise."""
    weight, bias = output.weight, output.bias
    if screens(x, weight):
        integer = weight_copies.block_copy(weight, "int8", quantized, weight.numel())
        if integer is not None:
            return integer_argmax(x, weight, bias, integer)
    return first_argmax(output(x))
