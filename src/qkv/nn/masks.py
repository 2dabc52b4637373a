"""The one mask convention of qkv, built in one place (STYLE principle 4).

A mask is a boolean tensor broadcastable to (B, H, T_q, T_k) where True means "this query may attend
to this key". `None` means "attend everywhere". Every model asks `attention_mask` how to express its
masking, so that `scaled_dot_product_attention` can use `is_causal=True` (and its fast kernels)
whenever there is no padding to hide.
"""

from __future__ import annotations

import torch
from torch import Tensor


def padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """(B, T) token ids -> (B, 1, 1, T) mask that hides padding keys."""
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(t_q: int, t_k: int, device: torch.device | str | None = None) -> Tensor:
    """(1, 1, T_q, T_k) mask of the decoder (sec 3.2.3): a query sees no later position.

    The queries are the last T_q positions of the T_k keys (they follow T_k - T_q cached ones), so
    query i sits at absolute position i + T_k - T_q and may see keys 0 .. i + T_k - T_q.
    """
    q_pos = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)
    k_pos = torch.arange(t_k, device=device)[None, :]
    return (k_pos <= q_pos)[None, None]


def position_mask(q_positions: Tensor, n_slots: int) -> Tensor:
    """(1, 1, T_q, n_slots) causal mask over a fixed-size cache (`StaticKVCache`): the query at
    absolute position p sees slots 0 .. p; later slots hold stale entries of an earlier sequence."""
    slots = torch.arange(n_slots, device=q_positions.device)
    return (slots[None, :] <= q_positions[:, None])[None, None]


def combine(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Logical AND of two masks, where None means no restriction."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def attention_mask(
    key_padding: Tensor | None, causal: bool, t_q: int, t_k: int, device: torch.device
) -> tuple[Tensor | None, bool]:
    """Decide how one attention call is masked: returns (mask or None, is_causal flag for SDPA).

    key_padding: (B, 1, 1, T_k) from `padding_mask`, or None when no key is padding.
    causal: whether queries must not see later keys (decoder self-attention, GPT).
    """
    if not causal:
        return key_padding, False
    if key_padding is None:
        if t_q == t_k:  # no cached prefix: SDPA's own causal kernel, no mask tensor at all
            return None, True
        if t_q == 1:  # one new token after a cached prefix sees every key
            return None, False
    return combine(key_padding, causal_mask(t_q, t_k, device)), False
