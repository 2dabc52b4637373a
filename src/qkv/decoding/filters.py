"""Logits filters: small pure functions (B, V) -> (B, V), shared by every sampler.

A filtered-out token gets -inf, so softmax gives it probability exactly 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row (ties at the k-th value may keep a few more)."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter (Holtzman et al., 2020): keep the smallest set of most likely tokens whose
    probabilities sum to at least p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    # drop a token if the ones ranked above it already reach p; the top token is always kept, even
    # for p <= 0 (where the test alone would drop every token and softmax would give NaN)
    drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def check_sampling(temperature: float, k: int, p: float) -> None:
    """Refuse settings that `sample` would otherwise read as something else without a word (a negative
    temperature as greedy, p above 1 as no filter): ValueError naming the setting."""
    if not temperature >= 0.0:  # also NaN
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if k < 0:
        raise ValueError(f"top_k must be >= 0 (0 is off), got {k}")
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 is off), got {p}")


def sample(
    logits: Tensor, temperature: float, k: int = 0, p: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """(B, V) logits -> (B,) ids: greedy when temperature is 0, else sample from the filtered softmax."""
    if temperature <= 0.0:
        return logits.argmax(-1)
    probs = top_p(top_k(logits / temperature, k), p).softmax(-1)
    try:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    except RuntimeError:  # PyTorch's message speaks of probabilities; the cause is the model's scores
        if torch.isfinite(logits).all():
            raise
        raise FloatingPointError("the model's next-token scores are NaN or infinite (damaged weights?)") from None
