"""Scaled dot-product and multi-head attention (sec 3.2).

One call site for production, `attend`, which goes through
`torch.nn.functional.scaled_dot_product_attention` (STYLE principle 6); `eager_attention` beside it
writes equation (1) out in full, for tests and for returning the weights that plots show.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.nn import short_attention
from qkv.nn.cache import LayerCache, StaticLayerCache
from qkv.nn.linear import Linear
from qkv.nn.masks import causal_mask, combine


def eager_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d_k)) V, eq. (1), written out.

    q: (B, H, T_q, d_k); k: (B, H, T_k, d_k); v: (B, H, T_k, d_v); mask broadcastable to (B, H, T_q, T_k).
    scale: the factor on Q K^T; None is the paper's 1/sqrt(d_k) (other values serve experiment 1).
    Returns the output (B, H, T_q, d_v) and the weights (B, H, T_q, T_k). A query with no visible key
    gets all-zero weights (and output), as SDPA gives, instead of the NaN of softmax over nothing.
    """
    if is_causal:
        mask = combine(mask, causal_mask(q.size(-2), k.size(-2), q.device))
    # The 1/sqrt(d_k) keeps the logits' variance near 1 as d_k grows (sec 3.2.1, footnote 4).
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1, dtype=torch.float32)  # summed in fp32 even for bf16 scores
    if mask is not None:
        weights = weights.masked_fill(~mask, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    weights = weights.to(v.dtype)
    return weights @ v, weights


def written_out_is_faster(q: Tensor, k: Tensor) -> bool:
    """Short keys in bf16 on the CPU (bf16 autocast): there PyTorch 2.13's fused SDPA kernel is slower
    than eq. (1) written out, whose two products run on the bf16 matrix units. Forward + backward with
    4,096 query tokens: 64 keys 38-41 ms against 19-23 ms; even at 128; SDPA ahead from 256 keys, and
    5x at 1,024 (benchmarks/levers/bf16_attention.py)."""
    return q.dtype == torch.bfloat16 and q.device.type == "cpu" and k.size(-2) <= 64  # fp32: one check


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    dropout_p: float,
    need_weights: bool,
    scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The single attention call site: SDPA, or the eager reference when weights are wanted (or when
    it is the faster of the two: `written_out_is_faster`), or qkv's kernel for short float32 sequences
    on the CPU (`qkv.nn.short_attention`). is_causal follows `causal_mask`: with fewer queries than keys,
    the queries are the last T_q positions (after a cached prefix)."""
    if is_causal and (mask is not None or q.size(-2) != k.size(-2)):
        # SDPA's flag and qkv's kernel align a causal mask to the top left (query i sees keys 0..i), and
        # SDPA takes no mask beside the flag: such a call gets the mask written out instead
        mask, is_causal = combine(mask, causal_mask(q.size(-2), k.size(-2), q.device)), False
    if need_weights or written_out_is_faster(q, k):
        out, weights = eager_attention(q, k, v, mask, is_causal, dropout_p, scale)
        return out, weights if need_weights else None
    if short_attention.applies(q, k, v, mask, is_causal, dropout_p):
        return short_attention.attention(q, k, v, mask, is_causal, scale), None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale)
    return out, None


AttentionScale = Literal["sqrt_dk", "none"]  # divide Q K^T by sqrt(d_k) (the paper), or not (experiment 1)


class _HeadsOut(nn.Module):
    """Shared tail of both attentions: attend per head, concatenate, project with W^O (sec 3.2.2)."""

    def __init__(self, d_model: int, n_heads: int, attention_dropout: float, scale: AttentionScale) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.attention_dropout = attention_dropout
        self.scale = None if scale == "sqrt_dk" else 1.0  # None: SDPA's own 1/sqrt(d_k)
        self.out = Linear(d_model, d_model)  # W^O

    def _attend(self, q, k, v, mask, is_causal, need_weights, groups: int = 1, out_bias: bool = True):
        """q: (B, H, T_q, d_head); k, v: (B / groups, H, T_k, d_head), each key row serving `groups`
        consecutive query rows (beam search: a sentence's K beams share its encoder output).
        out_bias=False leaves W^O's bias out, for a caller that adds it in its own next pass."""
        p = self.attention_dropout if self.training else 0.0
        b, h, t, d = q.shape
        if groups > 1:  # fold a group's rows into one row of groups * T_q queries: one attention call each
            q = q.view(b // groups, groups, h, t, d).transpose(1, 2).reshape(b // groups, h, groups * t, d)
        y, w = attend(q, k, v, mask, is_causal, p, need_weights, self.scale)  # (B / groups, H, groups * T_q, d_head)
        y = y.view(b // groups, h, groups, t, d).permute(0, 2, 3, 1, 4)  # (B / groups, groups, T_q, H, d_head)
        if w is not None:
            w = w.view(b // groups, h, groups, t, -1).transpose(1, 2).reshape(b, h, t, -1)  # (B, H, T_q, T_k)
        return self.out(y.reshape(b, t, h * d), add_bias=out_bias), w  # heads concatenated: (B, T_q, D)


class SelfAttention(_HeadsOut):
    """Multi-head self-attention: Q, K and V come from one fused (D -> 3D) projection of x."""

    def __init__(
        self, d_model: int, n_heads: int, attention_dropout: float = 0.0, scale: AttentionScale = "sqrt_dk"
    ) -> None:
        super().__init__(d_model, n_heads, attention_dropout, scale)
        self.qkv = Linear(d_model, 3 * d_model)  # [W^Q; W^K; W^V] of all heads at once

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        cache: LayerCache | StaticLayerCache | None = None,
        need_weights: bool = False,
        out_bias: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D) -> (B, T, D), and weights (B, H, T, T_k) when asked. With a cache, x holds
        only the new positions and the keys/values of earlier ones come from the cache. out_bias: as
        `_attend`'s."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d_head)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, T_past + T, d_head)
        return self._attend(q, k, v, mask, is_causal, need_weights, out_bias=out_bias)


class CrossAttention(_HeadsOut):
    """Encoder-decoder attention (sec 3.2.3): queries from the decoder, keys/values from the encoder
    output through one fused (D -> 2D) projection, computed once per sentence when cached."""

    def __init__(
        self, d_model: int, n_heads: int, attention_dropout: float = 0.0, scale: AttentionScale = "sqrt_dk"
    ) -> None:
        super().__init__(d_model, n_heads, attention_dropout, scale)
        self.q = Linear(d_model, d_model)
        self.kv = Linear(d_model, 2 * d_model)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        mask: Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
        out_bias: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D) decoder states; memory: (B_m, S, D) encoder output; mask: (B_m, 1, 1, S).
        B_m is B, or B / G when each of its rows serves G consecutive rows of x (beam search passes a
        sentence's encoder output once for its K beams instead of K copies). out_bias: as `_attend`'s."""
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, d_head)
        if cache is not None and cache.cross_k is not None:
            k, v = cache.cross_k, cache.cross_v
        else:
            b_m, s, _ = memory.shape
            k, v = (
                self.kv(memory).view(b_m, s, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
            )  # 2 x (B_m, H, S, d_head)
            if cache is not None:
                cache.cross_k, cache.cross_v = k, v
        if b % k.size(0):
            raise ValueError(f"{b} decoder rows cannot share {k.size(0)} encoder rows equally")
        return self._attend(q, k, v, mask, False, need_weights, groups=b // k.size(0), out_bias=out_bias)
