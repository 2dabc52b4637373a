"""qkv's compiled attention for short sequences (`qkv.nn.short_attention`): the same output and gradients
as eq. (1) computed in float64, for every mask qkv builds, and used by `attend` only where it applies."""

import pytest
import torch
from conftest import native_kernel, needs_build

from qkv.nn import attention, short_attention
from qkv.nn.attention import attend, eager_attention
from qkv.nn.linear import set_kernel
from qkv.nn.masks import causal_mask, padding_mask

pytestmark = needs_build


@pytest.fixture(autouse=True)
def built():
    native_kernel("attention_forward")


def packed(b: int, h: int, t_q: int, t_k: int, d: int, seed: int = 0):
    """q, k, v as the layers make them: strided views of one projection's output."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t_q, h, d, generator=g).transpose(1, 2)  # (B, H, T_q, d), heads interleaved in memory
    kv = torch.randn(b, t_k, 2, h, d, generator=g).permute(2, 0, 3, 1, 4)  # 2 x (B, H, T_k, d)
    return q, kv[0], kv[1]


def check(q, k, v, mask, is_causal, scale=None):
    """Forward and backward of the kernel against eq. (1) in float64."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out = short_attention.attention(*leaves, mask, is_causal, scale)
    ref_leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref, _ = eager_attention(*ref_leaves, mask, is_causal, scale=scale)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    out.backward(g)
    ref.backward(g.double())
    for ours, want in zip(leaves, ref_leaves):
        torch.testing.assert_close(ours.grad.double(), want.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("d", [16, 32, 64])
@pytest.mark.parametrize("t", [1, 7, 16, 24, 40, 64])
def test_padding_mask_matches_float64(d, t):
    q, k, v = packed(5, 3, t, t, d)
    tokens = torch.ones(5, t, dtype=torch.long)
    tokens[1, t // 2 + 1 :] = 0  # one sentence padded from the middle
    tokens[3, 1:] = 0  # one that is a single token
    check(q, k, v, padding_mask(tokens, 0), False)


@pytest.mark.parametrize("t", [1, 5, 24, 33, 64])
def test_causal_matches_float64(t):
    q, k, v = packed(3, 4, t, t, 32)
    check(q, k, v, None, True)


@pytest.mark.parametrize("d", [16, 64])
def test_the_longest_sequences_served_match_float64(d):
    """Past 64 keys the scores take the kernel's general loop: padded up to MAX_KEYS, causal up to
    MAX_CAUSAL_KEYS (a length that is not a whole number of 16-key vectors just below each)."""
    for t in (short_attention.MAX_KEYS - 3, short_attention.MAX_KEYS):
        q, k, v = packed(2, 2, t, t, d)
        tokens = torch.ones(2, t, dtype=torch.long)
        tokens[1, t - 20 :] = 0
        check(q, k, v, padding_mask(tokens, 0), False)
    for t in (short_attention.MAX_CAUSAL_KEYS - 7, short_attention.MAX_CAUSAL_KEYS):
        check(*packed(1, 2, t, t, d), None, True)


def test_cross_attention_lengths_and_a_scale():
    q, k, v = packed(4, 2, 9, 30, 32)  # queries and keys of different lengths
    tokens = torch.ones(4, 30, dtype=torch.long)
    tokens[2, 11:] = 0
    check(q, k, v, padding_mask(tokens, 0), False)
    check(q, k, v, None, False, scale=1.0)  # experiment 1's unscaled logits


def test_a_mask_per_query_and_queries_that_see_nothing():
    """A full (B, 1, T_q, T_k) mask (a causal mask after a cached prefix, or beam search's), including
    rows that hide every key: their output and gradients are zero, as SDPA and the eager reference give."""
    q, k, v = packed(2, 2, 6, 20, 16)
    mask = causal_mask(6, 20).expand(2, 1, 6, 20).clone()
    mask[1, :, 2] = False  # query 2 of sentence 1 sees nothing
    check(q, k, v, mask, False)
    out = short_attention.attention(q, k, v, mask, False, None)
    assert out[1, :, 2].abs().max() == 0


@pytest.mark.parametrize("d", [16, 32, 64])
@pytest.mark.parametrize("t_k", [1, 15, 16, 17, 33, 100, 700])
def test_one_query_against_a_cache_matches_float64(d, t_k):
    """A decoding step: one query per row against the filled part of a cache buffer (a strided view with
    room to spare), scored straight from the key rows, at any number of keys, with padded rows."""
    g = torch.Generator().manual_seed(t_k)
    q = torch.randn(6, 1, 3, d, generator=g).transpose(1, 2)  # (B, H, 1, d)
    k_buf, v_buf = torch.randn(2, 6, 3, t_k + 9, d, generator=g)  # capacity beyond the filled length
    k, v = k_buf[:, :, :t_k], v_buf[:, :, :t_k]
    tokens = torch.ones(6, t_k, dtype=torch.long)
    tokens[2, t_k // 2 + 1 :] = 0
    tokens[4, 1:] = 0
    check(q, k, v, padding_mask(tokens, 0), False)
    check(q, k, v, None, False)


def test_one_query_that_sees_nothing_gets_zeros():
    q, k, v = packed(3, 2, 1, 20, 32)
    tokens = torch.ones(3, 20, dtype=torch.long)
    tokens[1] = 0  # every key of sentence 1 hidden
    check(q, k, v, padding_mask(tokens, 0), False)
    assert short_attention.attention(q, k, v, padding_mask(tokens, 0), False, None)[1].abs().max() == 0


def test_the_output_is_laid_out_for_concatenating_heads():
    q, k, v = packed(2, 4, 5, 5, 32)
    out = short_attention.attention(q, k, v, None, True, None)
    assert out.permute(0, 2, 1, 3).is_contiguous()  # (B, T, H, d) in memory: the concatenation is a view


def test_attend_uses_the_kernel_only_where_it_applies(monkeypatch):
    calls = []
    real = short_attention.attention
    monkeypatch.setattr(short_attention, "attention", lambda *a: calls.append(1) or real(*a))
    q, k, v = packed(2, 2, 8, 8, 32)
    attend(q, k, v, None, True, 0.0, False)
    attend(*packed(2, 2, 1, 8, 32), None, False, 0.0, False)  # one query: a decoding step
    attend(*packed(2, 2, 1, 3 * short_attention.MAX_KEYS, 32), None, False, 0.0, False)  # at any length
    assert len(calls) == 3
    attend(*packed(1, 1, 150, 150, 32), None, True, 0.0, False)  # causal: longer sequences too
    assert len(calls) == 4
    long_q, long_k, long_v = packed(1, 1, 2, short_attention.MAX_KEYS + 1, 32)
    causal_long = packed(1, 1, short_attention.MAX_CAUSAL_KEYS + 1, short_attention.MAX_CAUSAL_KEYS + 1, 32)
    for args in (
        (q, k, v, None, True, 0.1, False),  # attention dropout
        (q, k, v, None, True, 0.0, True),  # weights wanted: the eager reference
        (q.double(), k.double(), v.double(), None, True, 0.0, False),
        (long_q, long_k, long_v, None, False, 0.0, False),
        (*causal_long, None, True, 0.0, False),
        (*packed(2, 2, 8, 8, 24), None, True, 0.0, False),  # a head size that is not compiled
    ):
        attend(*args)
    previous = set_kernel("pytorch")
    try:
        attend(q, k, v, None, True, 0.0, False)
    finally:
        set_kernel(previous)
    assert len(calls) == 4
    assert attention.short_attention is short_attention  # the one call site is the one that dispatches


def projection(b: int, t: int, n: int, h: int, d: int, seed: int = 0):
    """A fused projection's output (B, T, n H d) as a graph node, and its n slices as the layers take them."""
    x = torch.randn(b, t, n * h * d, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    out = x * 1.0  # not a leaf: the slices are views of a tensor autograd made, as a Linear's output is
    return x, out, out.view(b, t, n, h, d).permute(2, 0, 3, 1, 4).unbind(0)


@pytest.mark.parametrize("is_causal", [False, True])
def test_fused_self_attention_gradients_go_straight_into_the_projection(is_causal, monkeypatch):
    x, _, (q, k, v) = projection(3, 7, 3, 2, 16)
    calls = []
    monkeypatch.setattr(short_attention._PackedAttention, "apply", lambda *a: calls.append(1) or real(*a))
    real = torch.autograd.Function.apply.__get__(short_attention._PackedAttention)
    out = short_attention.attention(q, k, v, None, is_causal, None)
    assert calls == [1]
    ref_x = x.detach().double().requires_grad_()
    ref_q, ref_k, ref_v = ref_x.view(3, 7, 3, 2, 16).permute(2, 0, 3, 1, 4).unbind(0)
    ref, _ = eager_attention(ref_q, ref_k, ref_v, None, is_causal)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    (got,) = torch.autograd.grad(out, [x], g)
    (want,) = torch.autograd.grad(ref, [ref_x], g.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_fused_cross_attention_keys_and_values_with_a_padding_mask():
    xq = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    q = (xq * 1.0).view(2, 5, 2, 16).transpose(1, 2)  # (B, H, T_q, d): its own projection
    xkv, _, (k, v) = projection(2, 9, 2, 2, 16)
    assert short_attention.packed_source(q, k, v)[1] is q
    mask = padding_mask(torch.tensor([[1] * 9, [1] * 4 + [0] * 5]), 0)  # (B, 1, 1, S)
    out = short_attention.attention(q, k, v, mask, False, None)
    leaves = [t.detach().double().requires_grad_() for t in (xq, xkv)]
    ref_q = leaves[0].view(2, 5, 2, 16).transpose(1, 2)
    ref_k, ref_v = leaves[1].view(2, 9, 2, 2, 16).permute(2, 0, 3, 1, 4).unbind(0)
    ref, _ = eager_attention(ref_q, ref_k, ref_v, mask, False)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    got = torch.autograd.grad(out, [xq, xkv], g)
    want = torch.autograd.grad(ref, leaves, g.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def test_only_slices_of_one_projection_in_order_count_as_fused():
    _, out, (q, k, v) = projection(2, 4, 3, 2, 16)
    assert short_attention.packed_source(q, k, v)[0].shape == (2, 4, 3, 2, 16)
    assert short_attention.packed_source(k, q, v) is None  # q, k, v must be slices 0, 1 and 2
    assert short_attention.packed_source(q, v, k) is None
    assert short_attention.packed_source(q, k.detach().requires_grad_(), v) is None  # a detached slice: no base
    _, _, (q2, k2, v2) = projection(2, 4, 3, 2, 16, seed=1)
    assert short_attention.packed_source(q, k2, v) is None  # slices of two projections
    separate = [torch.randn(2, 2, 4, 16, requires_grad=True) for _ in range(3)]
    assert short_attention.packed_source(*separate) is None
    with torch.no_grad():
        _, _, frozen = projection(2, 4, 3, 2, 16)
    assert short_attention.packed_source(*frozen) is None  # nothing asks for gradients


def test_a_training_step_of_the_layers_takes_the_fused_route(monkeypatch):
    from conftest import tiny_config

    from qkv.models.seq2seq import EncoderDecoder

    model = EncoderDecoder(tiny_config(n_encoder_layers=1, n_decoder_layers=1, d_model=64))  # head size 16
    found = []
    real = short_attention.packed_source
    monkeypatch.setattr(short_attention, "packed_source", lambda *a: found.append(real(*a)) or found[-1])
    src, tgt = torch.randint(3, 23, (2, 6)), torch.randint(3, 23, (2, 5))
    model.train()(src, tgt).sum().backward()
    assert all(f is not None for f in found)
    assert [f[1] is None for f in found] == [True, True, False]  # encoder, decoder self: Q, K, V; cross: K, V
