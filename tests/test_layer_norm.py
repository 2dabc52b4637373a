"""The residual connection and its LayerNorm in one compiled pass (qkv.nn.block.residual_norm,
layer_norm.cpp): the same numbers as nn.LayerNorm(x + y), or nn.LayerNorm(y) without a residual (a
pre-LN block's norms), used only where no gradient is tracked."""

import pytest
import torch
from conftest import native_kernel, needs_build
from torch import nn

from qkv.nn.block import residual_norm

pytestmark = needs_build


@pytest.mark.parametrize("with_skip", [True, False])
@pytest.mark.parametrize("shape", [(64, 1, 256), (3, 5, 40), (1, 17), (2048, 64)])
def test_the_fused_pass_is_layer_norm_of_the_sum(shape, with_skip):
    native_kernel("add_layer_norm")
    torch.manual_seed(0)
    norm = nn.LayerNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x, y = torch.randn(shape) * 3 + 1, torch.randn(shape)
    if not with_skip:
        x = torch.zeros(shape)  # the sum is y alone
    with torch.inference_mode():
        got = residual_norm(norm, x if with_skip else None, y)
        torch.testing.assert_close(got, norm(x + y), rtol=1e-5, atol=1e-5)
        # the definition, in float64: (s - mean) / sqrt(var + eps) * w + b, biased variance
        s = (x + y).double()
        mean, var = s.mean(-1, keepdim=True), s.var(-1, unbiased=False, keepdim=True)
        want = (s - mean) / (var + 1e-6).sqrt() * norm.weight.double() + norm.bias.double()
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_gradients_go_through_pytorch():
    norm = nn.LayerNorm(8)
    x, y = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    out = residual_norm(norm, x, y)
    assert out.grad_fn is not None and "LayerNorm" in type(out.grad_fn).__name__  # PyTorch's own backward
    out.sum().backward()
    assert x.grad is not None and norm.weight.grad is not None
    assert residual_norm(norm, 0.0, y).shape == y.shape  # no residual (experiment 4): norm(y)
    pre = residual_norm(norm, None, x)  # a pre-LN block's norm in training
    assert pre.grad_fn is not None and "LayerNorm" in type(pre.grad_fn).__name__
    norm.weight.requires_grad_(False)  # only the bias is trained: still PyTorch's path, its gradient kept
    norm.bias.grad = None
    residual_norm(norm, x.detach(), y).sum().backward()
    assert norm.bias.grad is not None
