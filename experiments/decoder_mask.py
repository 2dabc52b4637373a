"""Experiment 3: the decoder mask (sec 3.1, 3.2.3).

In training the decoder sees the whole target at once (teacher forcing), so without the causal mask
position i can read the token it is asked to predict from position i + 1 of its own input. The loss
falls fast, but at generation time the future does not exist yet and the model has learnt nothing it
can use. With the mask, teacher-forced accuracy and generated accuracy agree.

    python experiments/decoder_mask.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/decoder_mask.py --fast    # the test suite's version

Prints a table and writes docs/img/experiment_decoder_mask.png.
"""

from __future__ import annotations

from common import Curve, ablate, parse_args, plot_training, report_generation


def run(mask: str, steps: int) -> Curve:
    return ablate("decoder_mask", (mask,), steps)[mask]


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_decoder_mask.png")
    steps = 300 if args.fast else 1000
    curves = ablate("decoder_mask", ("causal", "none"), steps)
    report_generation(
        f"Reversing 8 tokens, {steps} steps: teacher-forced vs generated, 500 held-out sequences",
        "decoder_mask",
        curves,
    )
    if not args.fast:
        plot_training(
            {f"mask: {v}": c for v, c in curves.items()}, args.plot, "What training sees", "What generation gets"
        )


if __name__ == "__main__":
    main()
