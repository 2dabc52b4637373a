"""GPT-2's activation, GELU in its tanh form: gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
(Hendrycks & Gimpel 2016, sec 2; Hugging Face calls it "gelu_new").

On the CPU in float32 it runs qkv's compiled kernel (`gelu.cpp`, built by `qkv.nn.native`): PyTorch's
`F.gelu(x, approximate="tanh")` spends most of its time in a vectorised tanh, and at the 4 x 128 GPT's
training shape (768 x 512 activations) the compiled pass took about 3x less time, forward and backward,
on session 25's AMD EPYC (`python benchmarks/levers/gelu.py`). Everywhere else (GPU, other
dtypes, autocast, `torch.compile`, `set_kernel("pytorch")`, or no compiler) it is `F.gelu`; the two
agree to float32 rounding (tests/test_gelu.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from qkv.nn import native


class _NativeGeluTanh(torch.autograd.Function):
    """The compiled forward and backward; saves the input (as F.gelu does) for the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return native.kernel("gelu_tanh")(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return native.kernel("gelu_tanh_backward")(grad, x)


def gelu_tanh(x: Tensor) -> Tensor:
    """GPT-2's GELU, elementwise: x (any shape) -> same shape."""
    forward = native.kernel("gelu_tanh") if native.applies(x) else None
    if forward is None:  # not float32 on the CPU, or the kernels could not be built
        return F.gelu(x, approximate="tanh")
    if torch.is_grad_enabled() and x.requires_grad:
        return _NativeGeluTanh.apply(x)
    return forward(x)
