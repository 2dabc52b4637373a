"""ReLU(x W^T + b) with the bias and the ReLU in one compiled pass (`qkv.nn.linear_relu`): the values and
gradients of `F.relu(F.linear(...))`, and used only where the module says."""

import pytest
import torch
import torch.nn.functional as F

import qkv.nn.linear as qlinear
import qkv.nn.linear_relu as linear_relu
from qkv.nn import native

pytestmark = pytest.mark.skipif(native.kernel("bias_relu_") is None, reason="qkv's CPU kernels could not be built")


def tensors(shape, out, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(out, shape[-1], generator=g, requires_grad=True)
    b = torch.randn(out, generator=g, requires_grad=True)
    return x, w, b, g


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (300, 33)])  # 300 rows: several tasks for the bias's sum
@pytest.mark.parametrize("out", [6, 40])
def test_values_and_gradients_of_f_linear_then_relu(shape, out):
    x, w, b, g = tensors(shape, out)
    y = linear_relu.linear_relu(x, w, b)
    want = F.relu(F.linear(x, w, b))
    assert 0 < int((want == 0).sum()) < want.numel()  # the mask stops some gradients, not all
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(y.shape, generator=g)
    got = torch.autograd.grad(y, [x, w, b], upstream)
    expected = torch.autograd.grad(want, [x, w, b], upstream)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_without_gradients_and_with_a_broadcast_gradient():
    x, w, b, _ = tensors((4, 3, 8), 16)
    with torch.no_grad():
        torch.testing.assert_close(linear_relu.linear_relu(x, w, b), F.relu(F.linear(x, w, b)))
    # the gradient of y.sum() is one number broadcast with stride 0: the kernel must read it as a matrix
    (gx,) = torch.autograd.grad(linear_relu.linear_relu(x, w, b).sum(), [x])
    (want,) = torch.autograd.grad(F.relu(F.linear(x, w, b)).sum(), [x])
    torch.testing.assert_close(gx, want)


def test_only_the_weight_gradient_when_only_it_is_asked():
    x, w, b, _ = tensors((6, 5), 4)
    x = x.detach()
    (gw,) = torch.autograd.grad(linear_relu.linear_relu(x, w, b).sum(), [w])
    (want,) = torch.autograd.grad(F.relu(F.linear(x, w, b)).sum(), [w])
    torch.testing.assert_close(gw, want)


def test_linear_comes_here_for_relu_on_the_pytorch_route_only(monkeypatch):
    x, w, b, _ = tensors((8, 16), 32)
    calls = []
    real = linear_relu.linear_relu
    monkeypatch.setattr(linear_relu, "linear_relu", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(qlinear, "chooses_onednn", lambda x, w: False)  # MKL's route, as on Intel processors
    qlinear.linear(x, w, b, relu=True)
    assert calls == [1]
    qlinear.linear(x, w, b)  # no ReLU: F.linear
    qlinear.linear(x, w, None, relu=True)  # no bias: F.linear, then F.relu
    assert calls == [1]
    previous = qlinear.set_kernel("pytorch")
    try:
        qlinear.linear(x, w, b, relu=True)  # PyTorch's kernels only
    finally:
        qlinear.set_kernel(previous)
    assert calls == [1]
    assert not linear_relu.applies(x.double(), w.double(), b.double())
