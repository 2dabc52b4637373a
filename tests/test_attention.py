import pytest
import torch
import torch.nn.functional as F

from qkv.nn.attention import SelfAttention, attend, eager_attention
from qkv.nn.masks import attention_mask, causal_mask, padding_mask

B, H, T, D = 3, 4, 7, 16


def _qkv(t_q=T, t_k=T):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(B, H, t_q, D, generator=g),
        torch.randn(B, H, t_k, D, generator=g),
        torch.randn(B, H, t_k, D, generator=g),
    )


def _padding():
    tokens = torch.ones(B, T, dtype=torch.long)
    tokens[1, 5:] = 0  # row 1 has 5 real tokens
    tokens[2, 2:] = 0  # row 2 has 2
    return padding_mask(tokens, pad_id=0)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_eager_matches_sdpa(padded, causal):
    q, k, v = _qkv()
    mask, is_causal = attention_mask(_padding() if padded else None, causal, T, T, q.device)
    if causal and not padded:
        assert mask is None and is_causal  # the fast path: no mask tensor
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    eager, weights = eager_attention(q, k, v, mask, is_causal)
    assert (sdpa - eager).abs().max() <= 1e-5
    assert torch.allclose(weights.sum(-1), torch.ones(B, H, T))


def test_eager_matches_sdpa_with_cached_prefix():
    """Queries are the last 3 of 7 positions: the causal mask must be offset (not SDPA's top-left one)."""
    q, k, v = _qkv(t_q=3)
    mask, is_causal = attention_mask(_padding(), True, 3, T, q.device)
    sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    eager, _ = eager_attention(q, k, v, mask, is_causal)
    assert (sdpa - eager).abs().max() <= 1e-5


@pytest.mark.parametrize("t_q", [1, 3])
def test_attend_is_causal_with_fewer_queries_than_keys_means_the_last_positions(t_q):
    """is_causal=True over a cached prefix: the queries are the last t_q of 7 positions, as in
    `causal_mask` and the eager reference, on every path of `attend` (SDPA's own flag, and qkv's
    kernel, align a causal mask to the top left instead: query i would see keys 0..i only)."""
    q, k, v = _qkv(t_q=t_q)
    want, _ = eager_attention(q, k, v, None, True)
    got, _ = attend(q, k, v, None, True, 0.0, False)
    assert (got - want).abs().max() <= 1e-5
    want_padded, _ = eager_attention(q, k, v, _padding(), True)
    got_padded, _ = attend(q, k, v, _padding(), True, 0.0, False)
    assert (got_padded - want_padded).abs().max() <= 1e-5


def test_causal_mask_offset():
    m = causal_mask(2, 4)[0, 0]
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = _qkv()
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask[0] = False
    for out in (F.scaled_dot_product_attention(q, k, v, attn_mask=mask), eager_attention(q, k, v, mask)[0]):
        assert torch.isfinite(out).all() and out[0].abs().max() == 0


def test_weights_are_scaled_by_sqrt_dk():
    q, k, v = _qkv()
    _, w = eager_attention(q, k, v)
    expected = torch.softmax(q @ k.transpose(-2, -1) / D**0.5, -1)
    assert torch.allclose(w, expected, atol=1e-6)


def test_multi_head_is_per_head_attention_then_output_projection():
    """Sec 3.2.2: MultiHead(Q,K,V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)."""
    torch.manual_seed(0)
    d_model, n_heads = 16, 4
    attn = SelfAttention(d_model, n_heads).eval()
    x = torch.randn(2, 5, d_model)
    wq, wk, wv = attn.qkv.weight.split(d_model)
    bq, bk, bv = attn.qkv.bias.split(d_model)
    d_h = d_model // n_heads
    heads = []
    for i in range(n_heads):
        s = slice(i * d_h, (i + 1) * d_h)
        qi, ki, vi = x @ wq[s].T + bq[s], x @ wk[s].T + bk[s], x @ wv[s].T + bv[s]
        heads.append(torch.softmax(qi @ ki.transpose(-2, -1) / d_h**0.5, -1) @ vi)
    expected = torch.cat(heads, -1) @ attn.out.weight.T + attn.out.bias
    out, _ = attn(x)
    assert (out - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_bf16_on_the_cpu_takes_the_written_out_path_and_agrees(padded, causal):
    """Under bf16 autocast, short keys go through eq. (1) written out (faster there); the result, and
    the gradient of q, agree with fp32 SDPA to bf16 precision, with padding and causal masks."""
    from qkv.nn.attention import attend, written_out_is_faster

    q, k, v = _qkv()
    mask, is_causal = attention_mask(_padding() if padded else None, causal, T, T, q.device)
    assert written_out_is_faster(q.bfloat16(), k.bfloat16())
    assert not written_out_is_faster(q, k)  # fp32 stays on SDPA
    assert not written_out_is_faster(q.bfloat16(), torch.zeros(B, H, 65, D, dtype=torch.bfloat16))  # long keys too
    q32 = q.clone().requires_grad_()
    ref = F.scaled_dot_product_attention(q32, k, v, attn_mask=mask, is_causal=is_causal)
    ref.sum().backward()
    q16 = q.bfloat16().requires_grad_()
    out, weights = attend(q16, k.bfloat16(), v.bfloat16(), mask, is_causal, 0.0, need_weights=False)
    out.float().sum().backward()
    assert weights is None and out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.05
    assert (q16.grad.float() - q32.grad).abs().max() <= 0.05 * q32.grad.abs().max()


@pytest.mark.parametrize("need_weights", [False, True])
def test_cross_attention_shares_an_encoder_row_among_consecutive_rows(need_weights):
    """Beam search passes each sentence's encoder output once for its K beams: the same result as K copies."""
    from qkv.nn.attention import CrossAttention
    from qkv.nn.cache import LayerCache

    torch.manual_seed(0)
    attn = CrossAttention(16, 4).eval()
    sentences, beams = 3, 4
    memory = torch.randn(sentences, 5, 16)
    mask = padding_mask(torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9], [5, 0, 0, 0, 0]]), 0)
    x = torch.randn(sentences * beams, 2, 16)
    want, want_w = attn(x, memory.repeat_interleave(beams, 0), mask.repeat_interleave(beams, 0), None, need_weights)
    got, got_w = attn(x, memory, mask, LayerCache(), need_weights)
    torch.testing.assert_close(got, want)
    if need_weights:
        torch.testing.assert_close(got_w, want_w)
    with pytest.raises(ValueError, match="cannot share"):
        attn(torch.randn(7, 1, 16), memory, mask)
