"""Experiment 8: BatchNorm against LayerNorm inside the Transformer block (sec 3.1; Ba et al., 2016).

LayerNorm normalises each position over its own features, so a position's output depends on nothing
but its own inputs. BatchNorm normalises each feature over the batch (here over all B x T positions):
in training an example's output then depends on the other examples in the batch and, in the decoder,
on positions that come *later*, which breaks the causal mask; at inference it switches to running
averages gathered from other batches. Part 1 measures both leaks on an untrained model; part 2 trains
both on reversal with variable lengths (4 to 12 tokens, so that batches hold padding, as real text does).

    python experiments/batchnorm.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/batchnorm.py --fast    # the test suite's version

Prints two tables and writes docs/img/experiment_batchnorm.png.
"""

from __future__ import annotations

import torch
from common import (
    FIRST,
    REVERSE,
    Curve,
    Task,
    ablate,
    parse_args,
    plot_training,
    print_table,
    report_generation,
    toy_config,
)

from qkv.models.seq2seq import EncoderDecoder

VARIABLE = Task("reverse", REVERSE.target, length=12, min_length=4)


def leaks(norm: str) -> dict[str, float]:
    """In training mode, how much example 0's output moves when the *other* examples change, and how
    much the decoder's output at positions < T moves when only the last decoder input changes."""
    torch.manual_seed(0)
    model = EncoderDecoder(toy_config(REVERSE, norm=norm)).train()  # no dropout: train mode is deterministic
    g = torch.Generator().manual_seed(0)
    src, tgt_in, _ = REVERSE.batch(16, g)
    with torch.no_grad():
        out = model(src, tgt_in)
        others_src, others_tgt = src.clone(), tgt_in.clone()
        others_src[1:], others_tgt[1:] = REVERSE.batch(15, g)[:2]
        other_examples = (model(others_src, others_tgt)[0] - out[0]).abs().max().item()
        future = tgt_in.clone()
        future[:, -1] = FIRST + (future[:, -1] - FIRST + 1) % REVERSE.symbols  # another last token
        later_position = (model(src, future)[:, :-1] - out[:, :-1]).abs().max().item()
    return {"other_examples": other_examples, "later_positions": later_position}


def run(norm: str, steps: int) -> Curve:
    return ablate("norm", (norm,), steps, VARIABLE)[norm]


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_batchnorm.png")
    print_table(
        "Part 1: largest change of a training-mode output when only other examples / later positions change",
        ["norm", "from_other_examples", "from_later_decoder_positions"],
        [[n, *leaks(n).values()] for n in ("layer", "batch")],
    )
    steps = 300 if args.fast else 1000
    curves = ablate("norm", ("layer", "batch"), steps, VARIABLE)
    report_generation(f"Part 2: reversing 4 to 12 tokens (padded batches), {steps} steps, 500 held out", "norm", curves)
    if not args.fast:
        plot_training(
            {f"{v} norm": c for v, c in curves.items()},
            args.plot,
            "Training (batch statistics)",
            "Generation (running statistics)",
        )


if __name__ == "__main__":
    main()
