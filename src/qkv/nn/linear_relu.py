"""ReLU(x W^T + b), the paper's feed-forward first half (sec 3.3, eq. 2), on the CPU with the bias and the
ReLU applied in one compiled pass over the product (`bias_relu.cpp`), which is computed without its bias.

`qkv.nn.linear.linear(..., relu=True)` comes here where it would otherwise call `F.linear` and then
`F.relu` (MKL's products; oneDNN applies the ReLU itself). There, `addmm` copies the bias into the
result before the product adds onto it, and `relu` reads and writes the whole result once more; the
backward pass masks the gradient in one pass (`threshold_backward`) and sums it for the bias in another.
Here: the product, then one pass forward; one pass backward for both gradients, then the two products.
The numbers equal `F.relu(F.linear(x, W, b))`'s up to the rounding of the bias's addition, which
`addmm` makes inside the product (tests/test_linear.py).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qkv.nn import native


def applies(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether the compiled passes serve these tensors: plain float32 CPU tensors with a bias, outside
    autocast and `torch.compile`, with `set_kernel` not at "pytorch" (`native.applies`)."""
    return (
        bias is not None
        and native.applies(x)
        and native.same_kind(x, weight, bias)
        and native.kernel("bias_relu_") is not None
    )


def linear_relu(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x: (..., in); weight: (out, in); bias: (out,) -> ReLU(x W^T + b): (..., out)."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return _LinearReLU.apply(x, weight, bias)
    y = torch.mm(x.reshape(-1, x.size(-1)), weight.t())  # (N, out), N = all leading dimensions
    return native.kernel("bias_relu_")(y, bias).view(*x.shape[:-1], weight.size(0))


class _LinearReLU(torch.autograd.Function):
    """Saves x, W and the output: the ReLU's gradient is read from its output, as `F.relu`'s is."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        y = torch.mm(x.reshape(-1, x.size(-1)), weight.t())  # (N, out)
        out = native.kernel("bias_relu_")(y, bias).view(*x.shape[:-1], weight.size(0))
        ctx.save_for_backward(x, weight, out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, out = ctx.saved_tensors
        y = out.reshape(-1, out.size(-1))  # (N, out)
        g, grad_b = native.kernel("relu_bias_backward")(grad.reshape(y.shape), y)  # (N, out), (out,)
        grad_x = g.mm(weight).view(x.shape) if ctx.needs_input_grad[0] else None  # dL/dx = g W
        grad_w = g.t().mm(x.reshape(-1, x.size(-1))) if ctx.needs_input_grad[1] else None  # dL/dW = g^T x
        return grad_x, grad_w, grad_b if ctx.needs_input_grad[2] else None
