"""Experiment 5: multi-head against single-head attention at equal parameter count (sec 3.2.2, Table 3 A).

h heads of width d_model / h cost the same parameters and nearly the same FLOPs as one head of width
d_model; the paper found one head 0.9 BLEU worse than eight. Here each output token is the ordered pair
(x_i, x_{L-1-i}) of two source tokens, as one symbol of a 64-letter alphabet. The model has no encoder
layers and one decoder layer, so one cross-attention must fetch both at once. One head can only return a
weighted average of the two (value) vectors, the same for (a, b) as for (b, a), so it cannot tell the
order; two or more heads can each fetch one of them.

    python experiments/heads.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/heads.py --fast    # the test suite's version

Prints a table and writes docs/img/experiment_heads.png.
"""

from __future__ import annotations

from common import (
    TOY_OPTIM,
    Curve,
    legend_grid,
    pair_task,
    parse_args,
    print_table,
    pyplot,
    save_figure,
    toy_config,
    train_toy,
)

from qkv.models.seq2seq import EncoderDecoder, count_parameters

TASK = pair_task()
HEADS = (1, 2, 4, 8)


def run(heads: int, steps: int, seed: int = 0) -> tuple[int, Curve]:
    cfg = toy_config(TASK, n_heads=heads, n_encoder_layers=0, n_decoder_layers=1)
    return count_parameters(EncoderDecoder(cfg)), train_toy(TASK, cfg, steps, TOY_OPTIM, seed)


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_heads.png")
    steps, seeds = (400, (0,)) if args.fast else (1000, (0,))
    runs = {(h, s): run(h, steps, s) for h in HEADS for s in seeds}
    rows = []
    for h in HEADS:
        curves = [runs[h, s][1] for s in seeds]
        rows.append(
            [
                h,
                64 // h,
                runs[h, seeds[0]][0],
                round(sum(c.final_loss for c in curves) / len(curves), 4),
                round(sum(c.token_accuracy for c in curves) / len(curves), 4),
                round(sum(c.final_exact for c in curves) / len(curves), 4),
            ]
        )
    print_table(
        f"Ordered pairs of 8 tokens, d_model 64, {steps} steps, mean of {len(seeds)} seed(s)",
        ["heads", "d_k", "parameters", "final_train_loss", "token_accuracy", "greedy_exact_match"],
        rows,
    )
    if not args.fast:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        for h in HEADS:
            ax.plot(*zip(*runs[h, seeds[0]][1].exact), "o-", label=f"{h} head(s), d_k = {64 // h}")
        ax.set(title="Ordered pairs: held-out exact match (seed 0)", xlabel="step", ylabel="greedy exact match")
        legend_grid(ax)
        save_figure(fig, args.plot)


if __name__ == "__main__":
    main()
