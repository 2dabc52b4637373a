"""qkv's label-smoothed cross-entropy (the gradient written out, `qkv.train.losses`) against PyTorch's
`F.cross_entropy(label_smoothing=...)` and `transformers`' `LabelSmoother` (what its Trainer uses for
`label_smoothing_factor`): the criterion alone, then qkv's whole training step with each of the first two.

    python benchmarks/levers/smoothed_loss.py [--rounds 7]

The criterion at the benchmark's shape: 64 x 24 target tokens over an 8,000-word vocabulary,
epsilon 0.1, forward + backward. The step: `benchmarks/seq2seq_train.py`'s qkv contender (same shape,
dropout 0.1, Adam), the same weights in both. Medians of alternating rounds, 2 threads.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate  # noqa: E402
from seq2seq_train import SHAPES, qkv_model  # noqa: E402
from seq2seq_train import pytorch_loss as pytorch  # noqa: E402  (the means over the target tokens)
from seq2seq_train import qkv_loss as ours  # noqa: E402

X, B, EPS = SHAPES["multi30k"], 64, 0.1  # the benchmark's epsilon


def hf_smoother():
    from transformers.trainer_pt_utils import LabelSmoother

    smoother = LabelSmoother(epsilon=EPS)  # ignores -100, the labels' padding in transformers
    return lambda logits, target: smoother({"logits": logits}, target.masked_fill(target == 0, -100))


def criterion_rates(rounds: int, repeats: int = 10) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(B, X.tgt_len, X.vocab, generator=g) * 3).requires_grad_()
    target = torch.randint(3, X.vocab, (B, X.tgt_len), generator=g)
    target[:, 20:] = 0  # some padding, as a real batch has

    def rate(criterion):
        def run() -> float:
            start = time.perf_counter()
            for _ in range(repeats):
                criterion(z, target).backward()
                z.grad = None
            return repeats / (time.perf_counter() - start)

        return run

    names = {"pytorch": pytorch, "qkv": ours, "transformers_label_smoother": hf_smoother()}
    return alternate({name: rate(c) for name, c in names.items()}, rounds)


def step_rates(rounds: int, steps: int = 5) -> dict[str, float]:
    torch.manual_seed(0)
    model = qkv_model(X)
    g = torch.Generator().manual_seed(0)
    src, tgt_in, tgt_out = (torch.randint(3, X.vocab, (B, n), generator=g) for n in (X.src_len, X.tgt_len, X.tgt_len))

    def rate(criterion):
        m = copy.deepcopy(model).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)

        def run() -> float:
            start = time.perf_counter()
            for _ in range(steps):
                criterion(m(src, tgt_in), tgt_out).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return steps * B * (X.src_len + X.tgt_len) / (time.perf_counter() - start)

        run()  # warm-up: Adam's state, the allocator
        return run

    return alternate({"pytorch": rate(pytorch), "qkv": rate(ours)}, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    c = criterion_rates(args.rounds)
    print("criterion, forward + backward, ms:", {k: round(1e3 / v, 2) for k, v in c.items()})
    print(
        f"  qkv against pytorch {c['qkv'] / c['pytorch']:.2f}x, against transformers' LabelSmoother "
        f"{c['qkv'] / c['transformers_label_smoother']:.2f}x"
    )
    s = step_rates(args.rounds)
    print("training step with each criterion, tokens/s:", {k: round(v) for k, v in s.items()})
    print(f"  {s['qkv'] / s['pytorch']:.3f}x")


if __name__ == "__main__":
    main()
