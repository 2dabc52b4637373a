"""Experiment 2: order needs positional encoding (sec 3.5).

Self-attention is permutation-equivariant: without positional information the encoder's output for a
shuffled input is the same set of vectors, shuffled, so a task whose answer depends on order (here:
reverse the input) cannot be learnt. The same model with sinusoidal or learned positions learns it.

    python experiments/positional_encoding.py           # about 3 minutes on 2 CPU cores
    python experiments/positional_encoding.py --fast    # the test suite's version (fewer steps)

Prints a table of exact-match accuracy on held-out sequences and writes
docs/img/experiment_positions.png (accuracy during training for each scheme).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from qkv.decoding.greedy import greedy_decode
from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig
from qkv.train.losses import label_smoothed_cross_entropy
from qkv.train.optim import OptimConfig

VOCAB, LENGTH = 20, 8  # tokens 4..19 (0-3 are pad/bos/eos/unk), sequences of 8


def batch(n: int, g: torch.Generator):
    """src (n, L+1) ending in EOS; decoder input and target for the reversed sequence."""
    x = torch.randint(4, VOCAB, (n, LENGTH), generator=g)
    eos, bos = torch.full((n, 1), 2), torch.full((n, 1), 1)
    y = x.flip(1)
    return torch.cat([x, eos], 1), torch.cat([bos, y], 1), torch.cat([y, eos], 1)


def run(positions: str, steps: int, seed: int = 0) -> list[tuple[int, float]]:
    """Train one model; returns (step, held-out exact match) along the way."""
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(
        VOCAB,
        VOCAB,
        d_model=64,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=128,
        dropout=0.0,
        positions=positions,
        max_len=32,
    )
    model = EncoderDecoder(cfg)
    optim = OptimConfig(schedule="inverse_sqrt", lr=2e-3, warmup_steps=100, label_smoothing=0.0)
    opt = optim.build(model)
    g, test = torch.Generator().manual_seed(seed), batch(500, torch.Generator().manual_seed(10_000 + seed))
    curve = []
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = optim.lr_at(step, cfg.d_model)
        src, tgt_in, tgt_out = batch(64, g)
        model.train()
        loss, n = label_smoothed_cross_entropy(model(src, tgt_in), tgt_out, 0.0, cfg.pad_id)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        opt.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            model.eval()
            out = greedy_decode(model, test[0], LENGTH + 1)[:, :LENGTH]
            curve.append((step, (out == test[2][:, :LENGTH]).all(1).float().mean().item()))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="few steps: the direction of the result only")
    parser.add_argument("--plot", default="docs/img/experiment_positions.png")
    args = parser.parse_args()
    steps = 300 if args.fast else 1500
    curves = {p: run(p, steps) for p in ("none", "sinusoidal", "learned")}
    print(f"{'positions':<12} {'exact match on 500 held-out reversals':>40}")
    for p, curve in curves.items():
        print(f"{p:<12} {curve[-1][1]:>40.1%}")
    print(json.dumps({p: c[-1][1] for p, c in curves.items()}))
    if not args.fast:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for p, curve in curves.items():
            ax.plot(*zip(*curve), "o-", label=p)
        ax.set(title="Reversing 8 tokens: exact match vs training step", xlabel="step", ylabel="held-out exact match")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
