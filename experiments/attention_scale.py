"""Experiment 1: why dot products are scaled by 1/sqrt(d_k) (sec 3.2.1, footnote 4).

If the components of q and k are independent with mean 0 and variance 1, q . k has variance d_k. For
large d_k the logits spread out, softmax puts almost all its weight on one key, and its gradient
vanishes. Part 1 measures this directly for growing d_k; part 2 trains the same encoder-decoder with and
without the scale on a task with one wide head (d_k = 256) and shows the unscaled one learning slower.

    python experiments/attention_scale.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/attention_scale.py --fast    # the test suite's version

Prints two tables and writes docs/img/experiment_scale.png.
"""

from __future__ import annotations

import math

import torch
from common import REVERSE, Curve, legend_grid, parse_args, print_table, pyplot, save_figure, toy_config, train_toy

from qkv.train.optim import OptimConfig

D_KS = (4, 16, 64, 256, 1024)
OPTIM = OptimConfig(schedule="inverse_sqrt", lr=1e-3, warmup_steps=100, label_smoothing=0.0)


def softmax_statistics(d_k: int, scaled: bool, n_keys: int = 32, rows: int = 2000, seed: int = 0) -> dict:
    """For q, k ~ N(0, I): the spread of the logits, how peaked softmax is, and the size of its gradient.

    The gradient is that of <g, softmax(s)> with respect to the logits s for a random unit-variance g
    (what backpropagation multiplies by): J^T g with J = diag(p) - p p^T, so it vanishes as p becomes
    one-hot.
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(rows, 1, d_k, generator=g)
    k = torch.randn(rows, n_keys, d_k, generator=g)
    logits = (q @ k.transpose(1, 2)).squeeze(1)  # (rows, n_keys), variance d_k
    if scaled:
        logits = logits / math.sqrt(d_k)
    logits.requires_grad_(True)
    p = logits.softmax(-1)
    (p * torch.randn(rows, n_keys, generator=g)).sum().backward()
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)
    return {
        "logit_std": logits.detach().std().item(),
        "max_weight": p.max(-1).values.mean().item(),
        "entropy": entropy.mean().item() / math.log(n_keys),  # 1 = uniform, 0 = one-hot
        "grad_norm": logits.grad.norm(dim=-1).mean().item(),
    }


def train(scale: str, steps: int, seed: int = 0) -> Curve:
    """Reversal with one head of d_k = 256 (d_model 256), scaled or not."""
    cfg = toy_config(REVERSE, d_model=256, n_heads=1, d_ff=512, attention_scale=scale)
    return train_toy(REVERSE, cfg, steps, OPTIM, seed)


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_scale.png")

    stats = {(d, s): softmax_statistics(d, s) for d in D_KS for s in (True, False)}
    rows = [
        [d, "1/sqrt(d_k)" if s else "none", *(round(v, 4) for v in stats[d, s].values())]
        for d in D_KS
        for s in (True, False)
    ]
    print_table(
        "Part 1: q, k ~ N(0, I), 32 keys: logits, softmax and its gradient",
        ["d_k", "scale", "logit_std", "max_weight", "entropy/log(n)", "grad_norm"],
        rows,
    )

    steps = 300 if args.fast else 1000
    curves = {s: train(s, steps) for s in ("sqrt_dk", "none")}
    print_table(
        f"Part 2: reversal, one head with d_k = 256, {steps} steps",
        ["scale", "final_loss", "exact_match", "seconds"],
        [[s, round(c.final_loss, 4), c.final_exact, round(c.seconds, 1)] for s, c in curves.items()],
    )
    if not args.fast:
        plot(stats, curves, args.plot)


def plot(stats: dict, curves: dict[str, Curve], path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for s, label in ((True, "scaled by 1/sqrt(d_k)"), (False, "unscaled")):
        axes[0].plot(D_KS, [stats[d, s]["max_weight"] for d in D_KS], "o-", label=label)
        axes[1].plot(D_KS, [stats[d, s]["grad_norm"] for d in D_KS], "o-", label=label)
    axes[0].set(xscale="log", xlabel="d_k", ylabel="mean largest softmax weight", title="Softmax peakedness")
    axes[1].set(xscale="log", yscale="log", xlabel="d_k", ylabel="|d out / d logits|", title="Softmax gradient")
    for s, c in curves.items():
        axes[2].plot(*zip(*c.loss), label="scaled" if s == "sqrt_dk" else "unscaled", alpha=0.8)
    axes[2].set(yscale="log", xlabel="step", ylabel="training loss", title="Reversal, one head, d_k = 256")
    legend_grid(*axes)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
