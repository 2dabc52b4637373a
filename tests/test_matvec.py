"""qkv's compiled single-row product (`matvec` in `qkv.nn.native`): it must compute what `F.linear`
computes, refuse what it cannot compute, and be chosen only where `qkv.nn.linear` says. The first test to
ask for it builds qkv's kernels (about 40 s) unless `make setup` already has; how the build is cached
and what happens when it fails is in test_native.py."""

import pytest
import torch
import torch.nn.functional as F
from conftest import native_kernel, needs_build

import qkv.nn.linear as qlinear
from qkv.models.gpt import GPT, GPTConfig
from qkv.nn import native
from qkv.nn.linear import linear, set_kernel


@pytest.fixture
def single_row():
    return native_kernel("matvec")


@pytest.fixture
def generic_mkl(monkeypatch):
    """Behave as on a processor where `auto` leaves MKL (an AMD one), with the choice put back after."""
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)
    previous = set_kernel("auto")
    yield
    set_kernel(previous)


@needs_build
@pytest.mark.parametrize("n_in", [1, 31, 32, 33, 768, 3072])  # under, at and over one 32-wide stride
@pytest.mark.parametrize("n_out", [1, 7, 13, 2304])  # 13: one group of 8 rows and 5 single ones
@pytest.mark.parametrize("with_bias", [True, False])
def test_values_match_a_float64_product(single_row, n_in, n_out, with_bias):
    g = torch.Generator().manual_seed(n_in * 10 + n_out)
    x, w = torch.randn(1, n_in, generator=g), torch.randn(n_out, n_in, generator=g)
    b = torch.randn(n_out, generator=g) if with_bias else None
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    torch.testing.assert_close(single_row(x, w, b).double(), want, rtol=1e-5, atol=1e-5 * n_in**0.5)


@needs_build
@pytest.mark.parametrize("shape", [(5,), (1, 5), (1, 1, 5)])
def test_leading_dimensions_are_kept(single_row, shape):
    x, w = torch.randn(shape), torch.randn(3, 5)
    assert single_row(x, w, None).shape == shape[:-1] + (3,)


@needs_build
def test_strided_operands_are_read_correctly(single_row):
    x = torch.randn(1, 40)[:, ::2]  # every other number: stride 2
    w = torch.randn(20, 9).t()  # a transposed view: (9, 20) with column-major strides
    torch.testing.assert_close(single_row(x, w, None), F.linear(x, w), rtol=1e-5, atol=1e-5)


@needs_build
def test_the_thread_count_does_not_change_a_single_bit(single_row):
    """Each output number is one thread's dot product in a fixed order, however the rows are split."""
    x, w = torch.randn(1, 768), torch.randn(3072, 768)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = single_row(x, w, None)
        torch.set_num_threads(2)
        two = single_row(x, w, None)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@needs_build
def test_what_it_cannot_compute_is_refused(single_row):
    w = torch.randn(4, 6)
    with pytest.raises(RuntimeError, match="one row of 6"):
        single_row(torch.randn(2, 6), w, None)
    with pytest.raises(RuntimeError, match="one row of 6"):
        single_row(torch.randn(1, 5), w, None)
    with pytest.raises(RuntimeError, match="float32"):
        single_row(torch.randn(1, 6, dtype=torch.float64), w, None)
    with pytest.raises(RuntimeError, match="bias must hold 4"):
        single_row(torch.randn(1, 6), w, torch.randn(5))


@needs_build
def test_linear_sends_only_single_rows_without_gradients_here(single_row, generic_mkl, monkeypatch):
    calls = []
    spy = {"matvec": lambda x, w, b: calls.append(x.shape) or single_row(x, w, b)}
    monkeypatch.setattr(native, "kernel", spy.get)
    w = torch.randn(3072, 768, requires_grad=True)  # 2.4M numbers: a 124M GPT's feed-forward weight
    with torch.no_grad():
        y = linear(torch.randn(1, 1, 768), w)  # a decoding step
        linear(torch.randn(1, 4, 768), w)  # a prompt of four tokens: oneDNN
        linear(torch.randn(1, 1, 128), torch.randn(384, 128))  # a small model's step: also the kernel
        linear(torch.randn(1, 1, 768).double(), w.double())  # float64: F.linear
        previous = set_kernel("onednn")
        linear(torch.randn(1, 1, 768), w)  # oneDNN when asked for by name
        set_kernel(previous)
    linear(torch.randn(1, 1, 768), w)  # gradients wanted: oneDNN's autograd function
    linear(torch.randn(1, 1, 768), w.detach())  # nothing to track although gradients are on: the kernel
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: False)  # an Intel processor: MKL
    with torch.no_grad():
        linear(torch.randn(1, 1, 768), w)
    assert calls == [(1, 1, 768), (1, 1, 128), (1, 1, 768)]
    assert y.shape == (1, 1, 3072) and not y.requires_grad


@needs_build
@pytest.mark.parametrize("x86", [True, False])
def test_on_intel_only_weights_that_stay_in_cache_take_it(single_row, monkeypatch, x86):
    """Intel: MKL reads a streamed weight at the memory's rate, so only small weights come here
    (`takes_matvec`); off x86 nothing does."""
    calls = []
    spy = {"matvec": lambda x, w, b: calls.append(tuple(w.shape)) or single_row(x, w, b)}
    monkeypatch.setattr(native, "kernel", spy.get)
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: False)
    monkeypatch.setattr(qlinear, "x86_with_both", lambda: x86)
    previous = set_kernel("auto")
    try:
        with torch.no_grad():
            small = linear(torch.randn(1, 1, 128), torch.randn(384, 128))  # a small GPT's step
            linear(torch.randn(1, 1, 768), torch.randn(qlinear.MIN_WEIGHT // 768 + 1, 768))  # just over: MKL
            linear(torch.randn(1, 1, 768), torch.randn(qlinear.MIN_WEIGHT // 768, 768))  # just under
    finally:
        set_kernel(previous)
    assert calls == ([(384, 128), (qlinear.MIN_WEIGHT // 768, 768)] if x86 else [])
    assert small.shape == (1, 1, 384)


@needs_build
def test_cached_steps_through_it_match_the_full_forward(single_row, generic_mkl):
    """A GPT whose output layer (2,048 x 256) is large enough to go through the kernel in each cached
    step: its logits agree with one forward over the whole sequence."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=2048, block_size=32, d_model=256, n_heads=4, n_layers=2, d_ff=512, dropout=0.0)
    model = GPT(config).eval()
    tokens = torch.randint(0, 2048, (1, 12))
    with torch.inference_mode():
        full = model(tokens).logits
        cache = model.new_cache()
        steps = [model(tokens[:, i : i + 1], cache).logits for i in range(12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)
