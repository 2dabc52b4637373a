"""The linear kernel choice (`qkv.nn.linear`): oneDNN must compute what `F.linear` computes, forward
and backward, and be chosen only where the module says."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qkv.nn.linear as qlinear
import qkv.nn.weight_copies as weight_copies
from qkv.models.gpt import GPT, GPTConfig
from qkv.nn.linear import Linear, chooses_onednn, linear, set_kernel

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


@pytest.fixture
def kernel():
    """Set a kernel for one test and put the previous choice back afterwards."""
    previous = set_kernel("auto")
    yield set_kernel
    set_kernel(previous)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (3, 1, 7)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("out", [6, 9])  # narrower and wider than the input: two orders of dL/dW
@pytest.mark.parametrize("relu", [False, True])  # the FFN's ReLU, applied by oneDNN as it writes y
def test_onednn_gives_f_linear_values_and_gradients(kernel, shape, with_bias, out, relu):
    kernel("onednn")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(out, 7, generator=g, requires_grad=True)
    b = torch.randn(out, generator=g, requires_grad=True) if with_bias else None
    assert chooses_onednn(x, w)
    y = linear(x, w, b, relu=relu)
    upstream = torch.randn(y.shape, generator=g)
    got = torch.autograd.grad(y, [x, w] + ([b] if with_bias else []), upstream)
    want_y = F.relu(F.linear(x, w, b)) if relu else F.linear(x, w, b)
    if relu:
        assert 0 < int((want_y == 0).sum()) < want_y.numel()  # the mask stops some gradients, not all
    want = torch.autograd.grad(want_y, [x, w] + ([b] if with_bias else []), upstream)
    torch.testing.assert_close(y, want_y, atol=1e-6, rtol=1e-5)
    for a, e in zip(got, want):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-5)


def test_onednn_gradient_only_where_asked_and_no_second_backward(kernel):
    kernel("onednn")
    x = torch.randn(4, 8)  # input without gradient: the first layer's case
    w = torch.randn(3, 8, requires_grad=True)
    y = linear(x, w)
    (gw,) = torch.autograd.grad(y.sum(), w, create_graph=True)
    torch.testing.assert_close(gw, torch.ones(4, 3).t() @ x)
    with pytest.raises(RuntimeError):
        gw.sum().backward()  # the backward is written out once, not differentiable again


def test_non_contiguous_input(kernel):
    kernel("onednn")
    x = torch.randn(8, 5).t()  # (5, 8), strided
    w = torch.randn(3, 8)
    torch.testing.assert_close(linear(x, w), F.linear(x, w), atol=1e-6, rtol=1e-5)


def test_autocast_and_other_dtypes_keep_f_linear(kernel):
    kernel("onednn")
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not chooses_onednn(x, w)
        assert linear(x, w).dtype == torch.bfloat16  # autocast cast it, as it casts F.linear
    assert not chooses_onednn(x.double(), w.double())
    kernel("pytorch")
    assert not chooses_onednn(x, w)


def test_auto_takes_onednn_only_for_large_products_where_mkl_is_generic(kernel, monkeypatch):
    kernel("auto")
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)
    monkeypatch.setattr(qlinear, "full_width_avx512", lambda: True)  # Zen 5
    small_decode = (torch.randn(1, 1, 128), torch.randn(384, 128))  # a 4 x 128 GPT's step: stays
    small_train = (torch.randn(12, 64, 128), torch.randn(384, 128))  # its training batch: 37.7M MACs
    big_decode = (torch.randn(1, 1, 768), torch.randn(3072, 768))  # a 124M model's step: weight-bound
    assert not chooses_onednn(*small_decode)
    assert chooses_onednn(*small_train)
    assert chooses_onednn(*big_decode)
    with torch.no_grad():  # outside training only large weights: other shapes come once (uncached generation)
        assert not chooses_onednn(*small_train)
        assert chooses_onednn(*big_decode)
    monkeypatch.setattr(qlinear, "full_width_avx512", lambda: False)  # Zen 4: training's smaller products stay,
    monkeypatch.setattr(qlinear, "_training_shapes", set())
    assert not chooses_onednn(*small_train)
    assert chooses_onednn(*small_train)  # until their shape comes again (`recurring`)
    assert chooses_onednn(*big_decode)
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: False)  # an Intel processor
    assert not chooses_onednn(*big_decode)


def test_zen4_training_takes_onednn_for_recurring_shapes_only(kernel, monkeypatch):
    """Half-width AVX-512: a training product's first shape stays on MKL, a shape seen before goes to
    oneDNN, and past MAX_TRAINING_SHAPES distinct shapes a new one is never admitted."""
    kernel("auto")
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)
    monkeypatch.setattr(qlinear, "full_width_avx512", lambda: False)
    monkeypatch.setattr(qlinear, "_training_shapes", set())
    monkeypatch.setattr(qlinear, "MAX_TRAINING_SHAPES", 2)
    w = torch.randn(256, 256)
    a, b, c = (torch.randn(rows, 256) for rows in (64, 48, 40))  # three shapes of >= 2^21 MACs
    assert [chooses_onednn(a, w), chooses_onednn(a, w), chooses_onednn(b, w)] == [False, True, False]
    assert not chooses_onednn(c, w) and not chooses_onednn(c, w)  # the third shape: over the limit
    assert chooses_onednn(b, w)
    with torch.no_grad():  # not training: inference products of small weights stay on MKL
        assert not chooses_onednn(a, w)
    assert not chooses_onednn(torch.randn(4, 256), w) and not chooses_onednn(torch.randn(4, 256), w)  # < 2^21
    monkeypatch.setattr(qlinear, "_training_shapes", set())
    monkeypatch.setattr(qlinear, "MAX_TRAINING_SHAPES", 128)
    d = torch.randn(64, 256, dtype=torch.float64)  # tensors oneDNN does not take are not noted
    assert not chooses_onednn(d, w.double()) and not chooses_onednn(d, w.double())
    assert qlinear._training_shapes == set()


@pytest.mark.parametrize("out", [48, 80])  # narrower and wider than the input
def test_weight_gradient_on_mkl_gives_f_linear_gradients(kernel, monkeypatch, out):
    """The Zen 4 path: oneDNN forward and dL/dx, MKL's dL/dW; every gradient as F.linear's."""
    kernel("auto")
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)
    monkeypatch.setattr(qlinear, "full_width_avx512", lambda: False)
    monkeypatch.setattr(qlinear, "_training_shapes", set())
    monkeypatch.setattr(qlinear, "MIN_MACS", 1)
    calls = []
    real = qlinear._onednn
    monkeypatch.setattr(qlinear, "_onednn", lambda *a: calls.append(a[0].shape) or real(*a))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 64, generator=g, requires_grad=True)
    w = torch.randn(out, 64, generator=g, requires_grad=True)
    b = torch.randn(out, generator=g, requires_grad=True)
    assert qlinear.weight_gradient_on_mkl(w)
    assert not qlinear.weight_gradient_on_mkl(torch.empty(1024, 256))  # from 2^18 numbers on: oneDNN's
    linear(x, w, b)  # the shape's first time: MKL
    assert calls == []
    y = linear(x, w, b)
    upstream = torch.randn(y.shape, generator=g)
    got = torch.autograd.grad(y, [x, w, b], upstream)
    assert calls == [(3, 5, 64), (15, out)]  # the forward product and dL/dx only
    want_y = F.linear(x, w, b)
    want = torch.autograd.grad(want_y, [x, w, b], upstream)
    torch.testing.assert_close(y, want_y, atol=1e-5, rtol=1e-5)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="unknown linear kernel"):
        set_kernel("blas")


def test_linear_module_keeps_nn_linear_names():
    assert list(Linear(4, 3).state_dict()) == list(nn.Linear(4, 3).state_dict())


def test_a_gpt_training_step_is_the_same_on_either_kernel(kernel):
    """Loss and every gradient of a small GPT agree between the kernels (rounding only)."""
    config = GPTConfig(vocab_size=50, block_size=16, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0)
    tokens = torch.randint(0, 50, (3, 17), generator=torch.Generator().manual_seed(1))
    results = []
    for name in ("pytorch", "onednn"):
        kernel(name)
        torch.manual_seed(0)
        model = GPT(config)
        logits = model(tokens[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, 50), tokens[:, 1:].reshape(-1))
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], atol=1e-6, rtol=1e-4, msg=n)


def test_a_broadcast_gradient_reaches_onednn_as_a_real_matrix(kernel, monkeypatch):
    """`y.sum()` back-propagates one number with stride 0; oneDNN took 200x longer on such an operand."""
    kernel("onednn")
    strides = []
    real = qlinear._onednn

    def spy(x, w, b, relu=False):
        strides.extend((x.stride(), w.stride()))
        return real(x, w, b, relu)

    monkeypatch.setattr(qlinear, "_onednn", spy)
    x, w = torch.randn(6, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    linear(x, w).sum().backward()
    assert all(0 not in s for s in strides)
    torch.testing.assert_close(w.grad, x.detach().sum(0).expand(5, 4), atol=1e-6, rtol=1e-5)


@pytest.fixture
def packed_only(kernel, monkeypatch):
    """`linear` as on a processor where MKL runs generic code."""
    kernel("auto")
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)
    return monkeypatch


@pytest.mark.parametrize("shape", [(64, 256), (3, 21, 256), (2, 256)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_inference_on_a_packed_weight_gives_f_linear_values(packed_only, shape, with_bias):
    w, b = torch.randn(600, 256), torch.randn(600) if with_bias else None  # 153,600 numbers >= MIN_PACKED
    x = torch.randn(shape)
    with torch.inference_mode(), weight_copies.packed_weights():
        assert qlinear.takes_packed(x, w, b)
        torch.testing.assert_close(linear(x, w, b), F.linear(x, w, b), rtol=1e-5, atol=1e-4)
        strided = x.transpose(0, 1) if x.dim() == 3 else x[::2]  # not contiguous
        torch.testing.assert_close(linear(strided, w, b), F.linear(strided, w, b), rtol=1e-5, atol=1e-4)
        fused = linear(x, w, b, relu=True)  # the FFN's ReLU applied by oneDNN as it writes the product
        torch.testing.assert_close(fused, F.relu(F.linear(x, w, b)), rtol=1e-5, atol=1e-4)
        assert len(weight_copies.block_copies()) == 1  # packed once, reused
    assert weight_copies.block_copies() is None  # dropped at the end of the block
    with torch.inference_mode():
        assert not qlinear.takes_packed(x, w, b)  # outside a block: the unpacked rules


def test_copies_live_only_as_long_as_the_block(packed_only):
    """A fused optimiser changes weights in place without moving their version counter, so a copy kept
    from one decoding call to the next would be stale; each block packs afresh. Blocks nest."""
    layer = Linear(256, 600)
    x = torch.randn(8, 256)
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)
    with torch.no_grad(), weight_copies.packed_weights():
        before = layer(x)
        first = qlinear.packed_weight(layer.weight, 8)
        with weight_copies.packed_weights():  # nested: the outer block's copy
            assert qlinear.packed_weight(layer.weight, 8) is first
    layer(x).square().sum().backward()
    version = layer.weight._version
    opt.step()
    assert layer.weight._version == version  # what makes keeping copies across calls unsafe
    with torch.no_grad(), weight_copies.packed_weights():
        after = layer(x)
        torch.testing.assert_close(after, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-4)
    assert not torch.allclose(before, after)


def test_packing_only_without_gradients_for_large_enough_weights_within_the_budget(packed_only):
    w = torch.randn(600, 256, requires_grad=True)
    x = torch.randn(8, 256)
    with weight_copies.packed_weights():
        assert not qlinear.takes_packed(x, w, None)  # training: gradients to track
        with torch.no_grad():
            assert qlinear.takes_packed(x, w, None)
            assert not qlinear.takes_packed(x, torch.randn(256, 256), None)  # 65,536 numbers: MKL keeps it
            assert not qlinear.takes_packed(x.double(), w.double(), None)
    packed_only.setattr(weight_copies, "PACKED_BYTES", 600 * 256 * 4)
    with torch.no_grad(), weight_copies.packed_weights():
        assert qlinear.packed_weight(w, 8) is not None
        assert qlinear.packed_weight(torch.randn(600, 256), 8) is None  # over the budget: not packed
        other = torch.randn(600, 256)
        torch.testing.assert_close(linear(x, other), F.linear(x, other))  # and computed all the same
    packed_only.setattr(qlinear, "mkl_runs_generic_code", lambda: False)  # an Intel processor: MKL
    with torch.no_grad(), weight_copies.packed_weights():
        assert not qlinear.takes_packed(x, w, None)


def test_relu_on_every_path(kernel):
    """relu=True on the paths that apply it after the product: training, single rows, other dtypes."""
    layer = Linear(256, 600)
    for x in (torch.randn(4, 256, requires_grad=True), torch.randn(1, 256), torch.randn(4, 256).double()):
        want = F.relu(F.linear(x, layer.weight.to(x.dtype), layer.bias.to(x.dtype)))
        if x.dtype == torch.float64:
            layer = layer.double()
        torch.testing.assert_close(layer(x, relu=True), want, rtol=1e-5, atol=1e-4)


def test_each_thread_has_its_own_block(packed_only):
    """A thread's block neither sees nor ends another thread's: one decoding thread finishing while
    another is still in its block leaves the other's copies in place."""
    import threading

    w = torch.randn(600, 256)
    inside, leave = threading.Event(), threading.Event()
    seen = []

    def other():
        with torch.no_grad(), weight_copies.packed_weights():
            qlinear.packed_weight(w, 8)
            inside.set()
            leave.wait(10)
            seen.append(len(weight_copies.block_copies()))

    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    assert weight_copies.block_copies() is None  # this thread is in no block
    with weight_copies.packed_weights():
        assert weight_copies.block_copies() == {}
    leave.set()
    thread.join()
    assert seen == [1]
