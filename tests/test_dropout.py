"""Dropout through qkv's compiled mask (`qkv.nn.dropout`): the right fraction dropped, survivors scaled
by 1 / (1 - p), the gradient masked by the same draws, no pattern between neighbours or calls, repeatable
under `torch.manual_seed`, and PyTorch's `F.dropout` wherever the kernel does not apply."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import native_kernel, needs_build

from qkv.nn.block import dropout as block_dropout
from qkv.nn.dropout import dropout
from qkv.nn.linear import set_kernel

pytestmark = needs_build


@pytest.fixture(autouse=True)
def built():
    native_kernel("dropout")


def kept(x: torch.Tensor, p: float) -> torch.Tensor:
    return dropout(x, p) != 0  # x holds no zeros below


@pytest.mark.parametrize("p", [0.02, 0.1, 0.5, 0.9])
def test_fraction_dropped_and_scale(p):
    x = torch.rand(1_000_003) + 0.5  # odd length: the vector loop's tail too
    y = dropout(x, p)
    keep = y != 0
    n = x.numel()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs((~keep).sum().item() - n * p) < 5 * sigma
    assert torch.equal(y[keep], x[keep] * torch.tensor(1 / (1 - p), dtype=torch.float32))


def test_no_pattern_between_neighbours_blocks_or_calls():
    x = torch.ones(1 << 22)
    a, b = kept(x, 0.5).float(), kept(x, 0.5).float()
    for shift in (1, 2, 16, 4096):  # neighbours, one vector's lanes apart, one block apart
        assert abs(torch.corrcoef(torch.stack([a[:-shift], a[shift:]]))[0, 1]) < 0.005
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.005  # two calls draw two masks
    per_block = a.view(-1, 4096).mean(1)  # every block of the kernel's inner loop keeps about half
    assert (per_block - 0.5).abs().max() < 6 * math.sqrt(0.25 / 4096)


def test_gradient_is_masked_by_the_same_draws():
    x = (torch.rand(64, 24, 256) + 0.5).requires_grad_()
    g = torch.randn(64, 24, 256)
    y = dropout(x, 0.1)
    y.backward(g)
    scale = torch.tensor(1 / 0.9, dtype=torch.float32)
    torch.testing.assert_close(x.grad, g * (y != 0) * scale, rtol=0, atol=0)


def test_repeatable_under_manual_seed_and_the_same_on_any_thread_count():
    x = torch.rand(300, 700) + 0.5
    torch.manual_seed(3)
    first = dropout(x, 0.1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(3)
        assert torch.equal(dropout(x, 0.1), first)
    finally:
        torch.set_num_threads(threads)
    assert not torch.equal(dropout(x, 0.1), first)


def test_strided_input_is_masked_in_its_logical_order():
    x = torch.rand(64, 96) + 0.5
    torch.manual_seed(0)
    y = dropout(x.t(), 0.3)
    torch.manual_seed(0)
    assert torch.equal(y, dropout(x.t().contiguous(), 0.3))


def test_pytorch_dropout_where_the_kernel_does_not_apply():
    x = torch.rand(32, 64) + 0.5
    for cast in (torch.float64, torch.bfloat16):
        torch.manual_seed(1)
        ours = dropout(x.to(cast), 0.2)
        torch.manual_seed(1)
        assert torch.equal(ours, F.dropout(x.to(cast), 0.2))
    previous = set_kernel("pytorch")
    try:
        torch.manual_seed(1)
        ours = dropout(x, 0.2)
        torch.manual_seed(1)
        assert torch.equal(ours, F.dropout(x, 0.2))
    finally:
        set_kernel(previous)


def test_p_of_one_drops_everything_as_pytorch_does():
    assert dropout(torch.rand(4, 8) + 0.5, 1.0).abs().max() == 0


def test_layers_skip_it_in_evaluation_and_at_zero():
    x = torch.rand(8, 16)
    module = torch.nn.Dropout(0.1).eval()
    assert block_dropout(module, x) is x
    assert block_dropout(torch.nn.Dropout(0.0), x) is x
    assert (block_dropout(torch.nn.Dropout(0.5), x + 0.5) == 0).any()
