"""Learning-rate schedules as pure functions of the step (1-based)."""

from __future__ import annotations

import math


def noam(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), eq. (3) of sec 5.3.

    Linear warm-up for `warmup` steps, then decay with the inverse square root of the step.
    """
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def inverse_sqrt(step: int, peak_lr: float, warmup: int) -> float:
    """Linear warm-up to peak_lr, then peak_lr * sqrt(warmup / step) (fairseq's inverse_sqrt)."""
    step = max(step, 1)
    return peak_lr * min(step / warmup, math.sqrt(warmup / step))


def cosine(step: int, peak_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Linear warm-up to peak_lr, then a half cosine down to min_lr at step `total`."""
    step = max(step, 1)
    if step < warmup:
        return peak_lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
