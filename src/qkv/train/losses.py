"""Training criteria, separate from the models (STYLE principle 9)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, epsilon: float, ignore_index: int
) -> tuple[Tensor, int]:
    """Summed loss and the number of target tokens it covers.

    logits: (B, T, V); target: (B, T) with `ignore_index` at padding. The smoothed target puts
    1 - epsilon on the true token and epsilon spread uniformly over all V tokens (Szegedy et al.,
    2016; the paper's epsilon_ls = 0.1, sec 5.4): it "hurts perplexity ... but improves BLEU".
    """
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=ignore_index,
        label_smoothing=epsilon,
        reduction="sum",
    )
    return loss, int((target != ignore_index).sum())
