"""GPT-2's GELU (`qkv.nn.gelu.gelu_tanh`): the compiled CPU kernel must compute what PyTorch's
`F.gelu(x, approximate="tanh")` computes, forward and backward, to float32 rounding, and be used only
where it applies."""

import pytest
import torch
import torch.nn.functional as F
from conftest import native_kernel, needs_build

from qkv.models.gpt import GPT, GPTConfig
from qkv.nn import native
from qkv.nn.gelu import gelu_tanh
from qkv.nn.linear import set_kernel

pytestmark = needs_build


@pytest.fixture(autouse=True)
def built():
    native_kernel("gelu_tanh")


def inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # the range activations live in, the far tails, and sizes under, at and over a vector's 16 lanes
    return torch.cat([torch.randn(20_000, generator=g) * 3, torch.linspace(-30, 30, 6001), torch.randn(17)])


def test_values_match_float64():
    x = inputs()
    want = F.gelu(x.double(), approximate="tanh")
    torch.testing.assert_close(gelu_tanh(x).double(), want, rtol=2e-6, atol=1e-7)
    pytorch_error = (F.gelu(x, approximate="tanh").double() - want).abs().max()
    assert (gelu_tanh(x).double() - want).abs().max() <= 2 * pytorch_error  # as close as PyTorch's own


def test_gradient_matches_float64():
    x = inputs()
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ours = x.clone().requires_grad_()
    gelu_tanh(ours).backward(g)
    ref = x.double().requires_grad_()
    F.gelu(ref, approximate="tanh").backward(g.double())
    torch.testing.assert_close(ours.grad.double(), ref.grad, rtol=1e-5, atol=1e-6)


def test_far_tails_and_special_values_are_pytorchs():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30, -1e-30, -50.0, 50.0, 1e20, -1e20])
    ours, want = gelu_tanh(x), F.gelu(x, approximate="tanh")
    torch.testing.assert_close(ours, want, equal_nan=True, rtol=0, atol=0)


def test_shapes_strides_and_threads_do_not_change_a_bit():
    """Each number is computed alone: neither its place in the tensor nor the thread count changes it."""
    x = torch.randn(96, 512)
    full = gelu_tanh(x)
    assert torch.equal(gelu_tanh(x[5:, 3:]), full[5:, 3:])  # a strided view, read through a copy
    assert torch.equal(gelu_tanh(x.t()), full.t())
    assert torch.equal(gelu_tanh(x.reshape(2, 48, 512)), full.reshape(2, 48, 512))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gelu_tanh(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, full)


def test_used_only_where_it_applies(monkeypatch):
    calls = []
    kernels = {name: native.kernel(name) for name in ("gelu_tanh", "gelu_tanh_backward")}

    def spy(name):
        return lambda *args: calls.append(name) or kernels[name](*args)

    monkeypatch.setattr(native, "kernel", spy)
    x = torch.randn(4, 8)
    gelu_tanh(x)  # float32 on the CPU
    gelu_tanh(x.requires_grad_()).sum().backward()  # and its gradient
    gelu_tanh(x.double())  # float64: F.gelu
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gelu_tanh(x)  # under autocast: F.gelu
    previous = set_kernel("pytorch")
    try:
        gelu_tanh(x)  # PyTorch's kernels asked for by name
    finally:
        set_kernel(previous)
    assert calls == ["gelu_tanh", "gelu_tanh", "gelu_tanh_backward"]


def test_a_gpt_training_step_matches_pytorchs_gelu():
    torch.manual_seed(0)
    shape = dict(vocab_size=65, block_size=64, d_model=128, n_heads=4, n_layers=2, d_ff=512)
    model = GPT(GPTConfig(**shape, dropout=0.0, attention_dropout=0.0))
    tokens = torch.randint(0, 65, (4, 65))

    def gradients():
        model.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, 65), tokens[:, 1:].reshape(-1))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, ours = gradients()
    previous = set_kernel("pytorch")
    try:
        want_loss, want = gradients()
    finally:
        set_kernel(previous)
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
