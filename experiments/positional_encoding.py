"""Experiment 2: order needs positional encoding (sec 3.5).

Self-attention is permutation-equivariant: without positional information the encoder's output for a
shuffled input is the same set of vectors, shuffled, so a task whose answer depends on order (here:
reverse the input) cannot be learnt. The same model with sinusoidal or learned positions learns it.

    python experiments/positional_encoding.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/positional_encoding.py --fast    # the test suite's version (fewer steps)

Prints a table of exact-match accuracy on held-out sequences and writes
docs/img/experiment_positions.png (accuracy during training for each scheme).
"""

from __future__ import annotations

from common import REVERSE, TOY_OPTIM, legend_grid, parse_args, print_table, pyplot, save_figure, toy_config, train_toy


def run(positions: str, steps: int, seed: int = 0) -> list[tuple[int, float]]:
    """Train one model; returns (step, held-out exact match) along the way."""
    return train_toy(REVERSE, toy_config(REVERSE, positions=positions), steps, TOY_OPTIM, seed).exact


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_positions.png")
    steps = 300 if args.fast else 1500
    curves = {p: run(p, steps) for p in ("none", "sinusoidal", "learned")}
    print_table(
        "Reversing 8 tokens: exact match on 500 held-out sequences",
        ["positions", "exact_match"],
        [[p, c[-1][1]] for p, c in curves.items()],
    )
    if not args.fast:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        for p, curve in curves.items():
            ax.plot(*zip(*curve), "o-", label=p)
        ax.set(title="Reversing 8 tokens: exact match vs training step", xlabel="step", ylabel="held-out exact match")
        legend_grid(ax)
        save_figure(fig, args.plot)


if __name__ == "__main__":
    main()
