"""Experiment 4: residual connections and where LayerNorm goes (sec 3.1; Xiong et al., 2020).

Part 1: a deep encoder-decoder (6 + 6 layers, 12 blocks deep on the decoder side) with and without the
residual connections. Without them the signal and its gradient must pass through every sub-layer; the
gradient that reaches the first layers is measured at initialisation, and the model is trained.

Part 2: post-LN (the paper: LN(x + f(x))) against pre-LN (x + f(LN(x))), each with the warm-up of
sec 5.3 and without it (the peak learning rate from the first step). Post-LN's gradients near the output
are large at initialisation, which is what the warm-up is for; pre-LN trains without one.

    python experiments/residual_norm.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/residual_norm.py --fast    # the test suite's version

Prints two tables and writes docs/img/experiment_residual_norm.png.
"""

from __future__ import annotations

import torch
from common import REVERSE, Curve, legend_grid, parse_args, print_table, pyplot, save_figure, toy_config, train_toy

from qkv.models.seq2seq import EncoderDecoder
from qkv.train.optim import OptimConfig

DEEP = {"n_encoder_layers": 6, "n_decoder_layers": 6}
WARMUP = OptimConfig(schedule="inverse_sqrt", lr=1e-3, warmup_steps=200, label_smoothing=0.0)
NO_WARMUP = OptimConfig(schedule="inverse_sqrt", lr=1e-3, warmup_steps=1, label_smoothing=0.0)


def first_layer_gradient(cfg, seed: int = 0) -> float:
    """Gradient norm of the first encoder layer's attention weights at initialisation, one batch."""
    torch.manual_seed(seed)
    model = EncoderDecoder(cfg)
    src, tgt_in, tgt_out = REVERSE.batch(64, torch.Generator().manual_seed(seed))
    logits = model(src, tgt_in)
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1)).backward()
    return model.encoder.layers[0].self_attn.qkv.weight.grad.norm().item()


def residual_runs(steps: int) -> dict[str, tuple[float, Curve]]:
    out = {}
    for residual in ("add", "none"):
        cfg = toy_config(REVERSE, **DEEP, residual=residual)
        out[residual] = (first_layer_gradient(cfg), train_toy(REVERSE, cfg, steps, WARMUP))
    return out


SCHEDULES = {"warm-up 200": WARMUP, "no warm-up": NO_WARMUP}
ALL = tuple((p, w) for p in ("post", "pre") for w in SCHEDULES)


def placement_runs(steps: int, which: tuple[tuple[str, str], ...] = ALL) -> dict[tuple[str, str], Curve]:
    """(LayerNorm placement, schedule) -> the run."""
    cfgs = {p: toy_config(REVERSE, **DEEP, norm_placement=p) for p in ("post", "pre")}
    return {(p, w): train_toy(REVERSE, cfgs[p], steps, SCHEDULES[w]) for p, w in which}


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_residual_norm.png")
    steps = 300 if args.fast else 500

    residual = residual_runs(steps)
    print_table(
        f"Part 1: 6 + 6 layers, post-LN, reversal, {steps} steps",
        ["residual", "first_layer_grad_at_init", "final_train_loss", "greedy_exact_match"],
        [[r, g, round(c.final_loss, 4), c.final_exact] for r, (g, c) in residual.items()],
    )
    placement = placement_runs(steps)
    print_table(
        f"Part 2: 6 + 6 layers, reversal, Adam peak lr 1e-3, {steps} steps",
        ["norm", "schedule", "final_train_loss", "greedy_exact_match", "diverged"],
        [[p, w, round(c.final_loss, 4), c.final_exact, c.diverged] for (p, w), c in placement.items()],
    )
    if not args.fast:
        plt = pyplot()
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
        for r, (_, c) in residual.items():
            left.plot(*zip(*c.loss), label=f"residual: {r}", alpha=0.8)
        for (p, w), c in placement.items():
            right.plot(*zip(*c.loss), label=f"{p}-LN, {w}", alpha=0.8)
        left.set(title="With and without residual connections", xlabel="step", ylabel="training loss", yscale="log")
        right.set(title="Post-LN vs pre-LN, with and without warm-up", xlabel="step", yscale="log")
        legend_grid(left, right)
        save_figure(fig, args.plot)


if __name__ == "__main__":
    main()
