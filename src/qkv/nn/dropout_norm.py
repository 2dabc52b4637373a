"""LayerNorm(x + Dropout(y + c)): the post-LN residual connection (sec 3.1) with the sub-layer's dropout
(sec 5.4) in training, as one compiled pass over the activations forward and one backward
(`dropout_layer_norm.cpp`). c, optional, is the bias of the sub-layer's last projection.

As three operations (`qkv.nn.dropout`, an add, `nn.LayerNorm`) the forward makes three passes and the
backward two; the Multi30k training step has 15 such connections. The bias c comes here because the
projection's own bias costs a pass each way: `addmm` first copies it into every row of the output, and
the backward sums the output's gradient over its rows; here it is one more read of a vector per row,
and its gradient is one more column sum in the backward pass (session 40: the Multi30k training step
1.006-1.023x). The mask is `qkv.nn.dropout`'s, drawn from the same seed, so the result equals the
three operations' up to the norm's rounding (tests/test_layer_norm.py). Elsewhere (inference, pre-LN
blocks, GPU, other dtypes, autocast, `torch.compile`, `set_kernel("pytorch")`) the block keeps the
separate operations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from qkv.nn import native
from qkv.nn.dropout import new_seed


def applies(norm: nn.Module, skip: Tensor | float, y: Tensor, p: float, y_bias: Tensor | None = None) -> bool:
    """Whether the compiled passes serve norm(skip + Dropout_p(y + y_bias)) in training: an affine
    LayerNorm over the last dimension, plain float32 CPU tensors of one shape, something asking for
    gradients. The block asks before it computes y, with the sub-layer's input in its place (the same
    shape and kind)."""
    return (
        torch.is_grad_enabled()  # first: decoding steps ask too, and leave here at once
        and type(norm) is nn.LayerNorm
        and isinstance(skip, Tensor)
        and skip.shape == y.shape
        and norm.weight is not None
        and norm.bias is not None
        and len(norm.normalized_shape) == 1
        and 0.0 <= p < 1.0
        and any(t is not None and t.requires_grad for t in (skip, y, norm.weight, norm.bias, y_bias))
        and native.applies(y)
        and native.same_kind(y, skip, norm.weight, norm.bias, *([] if y_bias is None else [y_bias]))
        and (y_bias is None or y_bias.shape == y.shape[-1:])
        and native.kernel("dropout_layer_norm_forward") is not None
    )


def dropout_add_layer_norm(
    norm: nn.LayerNorm, skip: Tensor, y: Tensor, p: float, y_bias: Tensor | None = None
) -> Tensor:
    """norm(skip + Dropout_p(y + y_bias)): skip, y (..., D), y_bias (D,) or None -> (..., D). p = 0 draws
    no seed, as `dropout` skips."""
    seed = new_seed() if p > 0 else 0
    return _DropoutAddLayerNorm.apply(skip, y, y_bias, norm.weight, norm.bias, p, seed, norm.eps)


class _DropoutAddLayerNorm(torch.autograd.Function):
    """Saves s = skip + Dropout(y + y_bias) and each row's mean and 1 / std, as `nn.LayerNorm` saves its
    input and statistics; the mask is drawn again from the seed."""

    @staticmethod
    def forward(ctx, skip, y, y_bias, weight, bias, p: float, seed: int, eps: float):
        d = y.size(-1)
        out, s, mean, rstd = native.kernel("dropout_layer_norm_forward")(
            y.reshape(-1, d).contiguous(), skip.reshape(-1, d).contiguous(), y_bias, weight, bias, p, seed, eps
        )  # (N, D), (N, D), (N,), (N,)
        ctx.save_for_backward(s, mean, rstd, weight)
        ctx.p, ctx.seed, ctx.shape, ctx.with_y_bias = p, seed, y.shape, y_bias is not None
        return out.view(y.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        s, mean, rstd, weight = ctx.saved_tensors
        d_skip, d_y, d_weight, d_bias, *d_y_bias = native.kernel("dropout_layer_norm_backward")(
            grad.reshape(s.shape), s, mean, rstd, weight, ctx.p, ctx.seed, ctx.with_y_bias
        )  # d_y_bias: [(D,)] when asked, else []
        d_y_bias = (d_y_bias or [None])[0]
        return d_skip.view(ctx.shape), d_y.view(ctx.shape), d_y_bias, d_weight, d_bias, None, None, None
