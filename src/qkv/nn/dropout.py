"""Dropout (sec 5.4, P_drop) as qkv's layers apply it: each element is zeroed with probability p and
the survivors are scaled by 1 / (1 - p), so that evaluation needs no rescaling.

On the CPU in float32 the mask comes from qkv's compiled kernel (`dropout.cpp`, built by
`qkv.nn.native`): a hash of the element's index and a seed drawn from PyTorch's generator, so
`torch.manual_seed` still makes a run repeatable, and the backward pass recomputes the mask from the seed
instead of storing it. PyTorch's `F.dropout` draws the mask with `bernoulli_`, which at the Multi30k
model's activations (1,536 x 256) took 3.5-3.7 ms a call on session 26's AMD EPYC; the kernel 0.08-0.09 ms
(`python benchmarks/levers/training_kernels.py`). Elsewhere (GPU, other dtypes, autocast, `torch.compile`,
`set_kernel("pytorch")`, no compiler) it is `F.dropout`. The masks differ from `F.dropout`'s for the
same seed; their statistics do not (tests/test_dropout.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from qkv.nn import native


class _NativeDropout(torch.autograd.Function):
    """Forward and backward are the same masking; only the seed is kept between them."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int) -> Tensor:
        ctx.p, ctx.seed = p, seed
        return native.kernel("dropout")(x, p, seed)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return native.kernel("dropout")(grad, ctx.p, ctx.seed), None, None


def new_seed() -> int:
    """A fresh seed from PyTorch's default generator for each call: two calls never share a mask, and
    `torch.manual_seed` repeats them."""
    return int(torch.empty((), dtype=torch.int64).random_())


def dropout(x: Tensor, p: float) -> Tensor:
    """Training-time dropout of x (any shape) with probability p in [0, 1] -> same shape."""
    kernel = native.kernel("dropout") if native.applies(x) and p < 1.0 else None
    if kernel is None:  # also p = 1, which configs refuse but F.dropout allows: all zeros
        return F.dropout(x, p, training=True)
    seed = new_seed()
    if torch.is_grad_enabled() and x.requires_grad:
        return _NativeDropout.apply(x, p, seed)
    return kernel(x, p, seed)
