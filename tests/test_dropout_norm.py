"""LayerNorm(x + Dropout(y)) in one compiled pass each way for training (`qkv.nn.dropout_norm`): the
values and gradients of the three separate operations, with the same mask from the same seed, and
used by the block only where it applies."""

import pytest
import torch
from conftest import native_kernel, needs_build, tiny_config
from torch import nn

from qkv.models.seq2seq import EncoderDecoder
from qkv.nn import dropout_norm
from qkv.nn.dropout import dropout

pytestmark = needs_build


def separate(norm, skip, y, p, y_bias=None):
    y = y if y_bias is None else y + y_bias
    return norm(skip + (dropout(y, p) if p > 0 else y))


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("shape", [(4, 37, 256), (90, 100), (3, 7)])  # rows across the mask's 4,096 blocks; short rows
def test_values_gradients_and_mask_are_those_of_the_three_operations(p, shape, with_bias):
    native_kernel("dropout_layer_norm_forward")
    g = torch.Generator().manual_seed(0)
    norm = nn.LayerNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        norm.bias.normal_(generator=g)
    skip = (torch.randn(shape, generator=g) * 3 + 1).requires_grad_()
    y = torch.randn(shape, generator=g, requires_grad=True)
    y_bias = torch.randn(shape[-1], generator=g, requires_grad=True) if with_bias else None  # the projection's
    assert dropout_norm.applies(norm, skip, y, p, y_bias)
    torch.manual_seed(5)
    got = dropout_norm.dropout_add_layer_norm(norm, skip, y, p, y_bias)
    after_fused = torch.rand(())  # the generator moved on as the separate path moves it
    torch.manual_seed(5)
    want = separate(norm, skip, y, p, y_bias)
    assert torch.equal(torch.rand(()), after_fused)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(shape, generator=g)
    leaves = [skip, y, norm.weight, norm.bias] + ([y_bias] if with_bias else [])
    for a, b in zip(torch.autograd.grad(got, leaves, upstream), torch.autograd.grad(want, leaves, upstream)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # the same elements dropped: y's gradient is zero exactly where the separate path's is
    (dy,) = torch.autograd.grad(dropout_norm.dropout_add_layer_norm(norm, skip, y, p), [y], torch.ones(shape))
    if p > 0:
        assert 0 < int((dy == 0).sum()) < dy.numel()


def test_only_in_training_on_plain_float32_with_an_affine_norm():
    norm = nn.LayerNorm(8)
    skip, y = torch.randn(2, 8), torch.randn(2, 8, requires_grad=True)
    assert dropout_norm.applies(norm, skip, y, 0.1)
    frozen = nn.LayerNorm(8).requires_grad_(False)
    assert dropout_norm.applies(frozen, skip, y, 0.1)
    assert not dropout_norm.applies(frozen, skip, y.detach(), 0.1)  # nothing asks for gradients
    with torch.no_grad():
        assert not dropout_norm.applies(norm, skip, y, 0.1)
    assert not dropout_norm.applies(norm, 0.0, y, 0.1)  # no residual (experiment 4)
    assert not dropout_norm.applies(norm, skip[:1], y, 0.1)
    assert not dropout_norm.applies(nn.LayerNorm(8, elementwise_affine=False), skip, y, 0.1)
    assert dropout_norm.applies(norm, skip, y, 0.1, torch.zeros(8))
    assert dropout_norm.applies(frozen, skip, y.detach(), 0.1, torch.zeros(8, requires_grad=True))  # the bias asks
    assert not dropout_norm.applies(norm, skip, y, 0.1, torch.zeros(4))  # not one per feature
    assert not dropout_norm.applies(norm, skip, y, 0.1, torch.zeros(8, dtype=torch.float64))
    assert not dropout_norm.applies(norm.double(), skip.double(), y.double(), 0.1)


def test_a_post_ln_training_step_takes_it_and_gives_the_same_loss_and_gradients(monkeypatch):
    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(dropout=0.1)).train()
    src, tgt = torch.randint(3, 23, (2, 6)), torch.randint(3, 23, (2, 5))

    def step():
        torch.manual_seed(1)
        loss = model(src, tgt).square().mean()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return loss, grads

    calls = []
    real = dropout_norm.dropout_add_layer_norm
    # each call with its sub-layer's last bias (y_bias), which the projection then leaves out
    monkeypatch.setattr(dropout_norm, "dropout_add_layer_norm", lambda *a: calls.append(a[4] is not None) or real(*a))
    fused = step()
    assert calls == [True] * (2 * 2 + 3 * 2)  # 2 encoder layers x 2 sub-layers, 2 decoder layers x 3
    monkeypatch.setattr(dropout_norm, "applies", lambda *a: False)
    unfused = step()
    torch.testing.assert_close(fused[0], unfused[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(fused[1], unfused[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
