"""Attention over short sequences through qkv's compiled kernel (`attention.cpp`, built by `qkv.nn.native`),
which `qkv.nn.attention.attend` uses in place of SDPA where it applies.

PyTorch's CPU SDPA kernel tiles queries and keys for long sequences; at translation's lengths (tens of
positions) most of its time is overhead. The kernel scores one (sentence, head) pair's queries against all
its keys at once and keeps each query's log-sum-exp for the backward pass, as SDPA does. At the Multi30k
model's training shape (64 x 8 heads x 24 positions x 32) a layer's forward and backward took 3.6 ms
against SDPA's 6.8 on session 26's AMD EPYC (`python benchmarks/levers/training_kernels.py`).
A single query (each step of decoding) is scored straight from the key rows, without the transpose:
1.5-3x SDPA from 20 to 2,048 keys (64 x 8 rows of 20 keys: 49 against 151 us; session 28's Zen 4, one-off
timings). It serves float32 CPU tensors with head size 16, 32 or 64, up to `MAX_KEYS` keys
(`MAX_CAUSAL_KEYS` under a causal mask; any number for a single query), without attention dropout,
outside autocast and `torch.compile`; `set_kernel("pytorch")` turns it off with the other kernels.
Results agree with SDPA's to float32 rounding (tests/test_short_attention.py).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qkv.nn import native

# Up to how many keys the kernel beats SDPA, forward and backward together (session 29's Zen 4, 2 threads,
# 64 x 8 heads x d_k 32 and 12 x 12 x 64; a one-off script, then `python benchmarks/levers/training_kernels.py
# --long-only`). With a padding mask: 1.21-1.58x and 1.15-1.19x at 96 keys, but 0.91-0.94x at 128 with d_k
# 64 and 0.63-0.79x at 256. Causal, the kernel skips the hidden half of the scores and stays ahead:
# 1.67-2.21x at 128 keys, 1.11-1.53x at 256.
MAX_KEYS = 96
MAX_CAUSAL_KEYS = 256


def applies(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout_p: float) -> bool:
    """Whether the kernel serves this call: q (B, H, T_q, D), k and v (B, H, T_k, D) with the same B and H."""
    return (
        dropout_p == 0.0
        and q.dim() == 4
        # one query (a decoding step) at any length: its scores come straight from the key rows
        and (k.size(-2) <= (MAX_CAUSAL_KEYS if is_causal else MAX_KEYS) or q.size(-2) == 1)
        and q.size(-1) in (16, 32, 64)
        and q.shape[:2] == k.shape[:2] == v.shape[:2]
        and k.shape == v.shape
        and (mask is None or (mask.dtype == torch.bool and not is_causal))
        and native.applies(q)
        and native.same_kind(q, k, v)
        and native.kernel("attention_forward") is not None
    )


class _Attention(torch.autograd.Function):
    """Saves q, k, v, the output and each query's log-sum-exp; the backward pass recomputes the weights."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, scale: float) -> Tensor:
        out, lse = native.kernel("attention_forward")(q, k, v, mask, is_causal, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mask, ctx.is_causal, ctx.scale = mask, is_causal, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = native.kernel("attention_backward")(
            grad, q, k, v, out, lse, ctx.mask, ctx.is_causal, ctx.scale, None, None, None
        )
        return dq, dk, dv, None, None, None


class _PackedAttention(torch.autograd.Function):
    """`_Attention` for keys and values (and queries, in self-attention) that are slices of one fused
    projection's output, `packed` (B, T_k, n, H, D): n = 3 for Q, K, V (then q is None), n = 2 for K, V.
    The backward pass writes their gradients straight into one tensor of that shape. Taking q, k and
    v as three tensors instead, autograd stacks their gradients and copies the stack into the
    projection's layout: two passes over it, 0.7 ms of each self-attention layer of the Multi30k
    training step (session 36's Xeon, docs/PERFORMANCE.md)."""

    @staticmethod
    def forward(ctx, packed: Tensor, q: Tensor | None, mask: Tensor | None, is_causal: bool, scale: float) -> Tensor:
        *parts, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T_k, D)
        q = parts[0] if q is None else q
        out, lse = native.kernel("attention_forward")(q, k, v, mask, is_causal, scale)
        ctx.save_for_backward(packed, q, out, lse)
        ctx.mask, ctx.is_causal, ctx.scale = mask, is_causal, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        packed, q, out, lse = ctx.saved_tensors
        *parts, k, v = packed.permute(2, 0, 3, 1, 4).unbind(0)
        q = parts[0] if q is None else q
        d_packed = torch.empty_like(packed)
        *d_parts, dk, dv = d_packed.permute(2, 0, 3, 1, 4).unbind(0)  # views: the kernel writes into them
        dq = d_parts[0] if d_parts else None
        dq = native.kernel("attention_backward")(
            grad, q, k, v, out, lse, ctx.mask, ctx.is_causal, ctx.scale, dq, dk, dv
        )[0]
        return d_packed, None if parts else dq, None, None, None


def slices_of(t: Tensor, n: int) -> tuple[Tensor, int] | None:
    """(P, i) where t (B, H, T, D) is P[:, :, i].transpose(1, 2) for P (B, T, n, H, D) a view of the
    contiguous tensor t is a view of (a fused projection's output); None where it is not."""
    base = t._base  # the tensor t is a view of, or None (a detached t's is None too)
    b, h, length, d = t.shape
    if base is None or not base.is_contiguous() or base.numel() != b * length * n * h * d:
        return None
    i, rest = divmod(t.storage_offset() - base.storage_offset(), h * d)
    if rest or not 0 <= i < n or t.stride() != (length * n * h * d, d, n * h * d, 1):
        return None
    return base.view(b, length, n, h, d), i


def packed_source(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor | None] | None:
    """(packed, q) for `_PackedAttention` where q, k, v (self-attention) or k, v (cross-attention) are
    slices of one fused projection (`qkv.nn.attention`) in order, all of them asking for gradients; else
    None (`_Attention` then takes them as they are)."""
    if not (q.requires_grad and k.requires_grad and v.requires_grad):
        return None
    for n, views in ((3, (q, k, v)), (2, (k, v))):
        found = [slices_of(t, n) for t in views]
        if all(f is not None and f[1] == i and t._base is k._base for i, (f, t) in enumerate(zip(found, views))):
            return found[0][0], (None if n == 3 else q)
    return None


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, scale: float | None) -> Tensor:
    """softmax(scale Q K^T + mask) V (sec 3.2.1, eq. 1) -> (B, H, T_q, D), laid out as (B, T_q, H, D) in
    memory so that concatenating the heads is a view. is_causal: query i sees keys 0..i, as in SDPA."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        packed = packed_source(q, k, v)
        if packed is not None:  # the gradients straight into the fused projection's layout
            return _PackedAttention.apply(packed[0], packed[1], mask, is_causal, scale)
        return _Attention.apply(q, k, v, mask, is_causal, scale)
    return native.kernel("attention_forward")(q, k, v, mask, is_causal, scale)[0]
