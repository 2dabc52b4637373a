import math

import pytest
import torch

from qkv.train.losses import label_smoothed_cross_entropy
from qkv.train.optim import OptimConfig
from qkv.train.schedules import cosine, inverse_sqrt, noam


@pytest.mark.parametrize("step", [1, 100, 3999, 4000, 4001, 20000, 100000])
def test_noam_is_the_papers_formula(step):
    expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
    assert noam(step, 512, 4000) == pytest.approx(expected, rel=1e-12)
    assert OptimConfig().lr_at(step, 512) == pytest.approx(expected, rel=1e-12)


def test_noam_peaks_at_warmup():
    lrs = [noam(s, 512, 4000) for s in range(1, 10000)]
    assert max(range(len(lrs)), key=lrs.__getitem__) + 1 == 4000
    assert lrs[3999] == pytest.approx(512**-0.5 * 4000**-0.5)


def test_other_schedules():
    assert inverse_sqrt(10, 1e-3, 10) == pytest.approx(1e-3) and inverse_sqrt(40, 1e-3, 10) == pytest.approx(5e-4)
    assert cosine(10, 1.0, 10, 110) == pytest.approx(1.0) and cosine(110, 1.0, 10, 110) == pytest.approx(0.0)
    assert cosine(60, 1.0, 10, 110) == pytest.approx(0.5)


def test_label_smoothing_by_hand():
    logits = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4]]])
    target = torch.tensor([[0, 3]])
    eps, v = 0.1, 4
    total = 0.0
    for t in range(2):
        logp = torch.log_softmax(logits[0, t], -1)
        q = torch.full((v,), eps / v)
        q[target[0, t]] += 1 - eps  # (1 - eps) on the truth plus eps/V everywhere
        total += -(q * logp).sum().item()
    loss, n = label_smoothed_cross_entropy(logits, target, eps, ignore_index=-100)
    assert n == 2 and loss.item() == pytest.approx(total, rel=1e-6)


def test_padding_is_ignored():
    logits = torch.randn(1, 3, 5)
    loss_all, n = label_smoothed_cross_entropy(logits, torch.tensor([[1, 2, 0]]), 0.1, ignore_index=0)
    loss_two, _ = label_smoothed_cross_entropy(logits[:, :2], torch.tensor([[1, 2]]), 0.1, ignore_index=0)
    assert n == 2 and loss_all.item() == pytest.approx(loss_two.item())
    assert math.isfinite(loss_all.item())
