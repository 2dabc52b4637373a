"""qkv's compiled GPT-2 GELU (`gelu_tanh` in `qkv.nn.native`, used by `qkv.nn.gelu`) against PyTorch's
`F.gelu(x, approximate="tanh")`, alternating in one process.

    python benchmarks/levers/gelu.py [--rounds 5]

1. The activation alone, forward and backward (us per call), at the 4 x 128 GPT's training shape
   (12 x 64 positions x 512) and at a 124M GPT's decoding step (1 x 3,072), beside a plain multiply of
   the same tensor for scale.
2. The training step of `benchmarks/gpt.py` (4 layers, 4 heads, width 128, batch 12 x 64, AdamW,
   clipping) in tokens/s, with the feed-forward activation of the same model set to each in turn.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate, environment  # noqa: E402

from qkv.models.gpt import GPT, GPTConfig  # noqa: E402
from qkv.nn import native  # noqa: E402
from qkv.nn.block import FeedForward  # noqa: E402
from qkv.nn.gelu import gelu_tanh  # noqa: E402


def pytorch_gelu(x):
    return F.gelu(x, approximate="tanh")


def per_call_us(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6


def op_times(shape: tuple[int, ...], rounds: int, reps: int) -> None:
    x, g = torch.randn(shape) * 2, torch.randn(shape)
    backward = native.kernel("gelu_tanh_backward")
    contenders = {
        "x * x": lambda: per_call_us(lambda: x * x, reps),
        "F.gelu forward": lambda: per_call_us(lambda: pytorch_gelu(x), reps),
        "qkv forward": lambda: per_call_us(lambda: gelu_tanh(x), reps),
        "F.gelu backward": lambda: per_call_us(lambda: torch.ops.aten.gelu_backward(g, x, approximate="tanh"), reps),
        "qkv backward": lambda: per_call_us(lambda: backward(g, x), reps),
    }
    us = alternate(contenders, rounds)  # medians of rates are medians of times here: one call each
    print(
        f"{' x '.join(map(str, shape))}: "
        + ", ".join(f"{k} {v:.1f}" for k, v in us.items())
        + f" us; forward {us['F.gelu forward'] / us['qkv forward']:.2f}x, "
        f"backward {us['F.gelu backward'] / us['qkv backward']:.2f}x"
    )


def training(rounds: int, steps: int = 50) -> None:
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=65, block_size=64, d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0, attention_dropout=0.0
    )
    model = GPT(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 65, (12, 65), generator=g) for _ in range(steps)]

    def rate(activation):
        def run() -> float:
            for m in model.modules():
                if isinstance(m, FeedForward):
                    m.act = activation
            start = time.perf_counter()
            for b in batches:
                logits = model(b[:, :-1]).logits
                F.cross_entropy(logits.reshape(-1, 65), b[:, 1:].reshape(-1)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            return steps * 12 * 64 / (time.perf_counter() - start)

        return run

    tokens = alternate({"F.gelu": rate(pytorch_gelu), "qkv": rate(gelu_tanh)}, rounds)
    print(
        f"4 x 128 GPT training step: F.gelu {tokens['F.gelu']:.0f}, qkv {tokens['qkv']:.0f} tokens/s: "
        f"{tokens['qkv'] / tokens['F.gelu']:.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if native.module() is None:
        sys.exit("qkv's kernels could not be built here: nothing to compare")
    print(environment())
    op_times((12, 64, 512), args.rounds, reps=200)
    op_times((1, 3072), args.rounds, reps=5000)
    training(args.rounds)


if __name__ == "__main__":
    main()
