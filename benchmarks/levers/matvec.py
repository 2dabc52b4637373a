"""qkv's compiled single-row product (`matvec` in `qkv.nn.native`) against oneDNN and `F.linear` (MKL), for batch-1
decoding on an x86 processor that is not Intel's, alternating in one process.

    python benchmarks/levers/matvec.py [--rounds 5]

1. Read rates (GB/s) of matrix-vector products over distinct matrices of the `gpt2` shape (12 layers x
   (2,304 + 768 + 3,072 + 3,072) x 768, plus the 50,257 x 768 embedding: 497 MB, more than any cache)
   through each kernel, beside PyTorch's plain `sum()` of the same matrices for scale (a sum is not
   a ceiling: the loop has read faster than it).
2. One cached decoding step of a random 124M GPT after 16 tokens (ms), and greedy generation of 64
   tokens through `generate` (tokens/s), under `set_kernel("pytorch")` (MKL), `"onednn"` and `"auto"`
   (which sends these products to the compiled loop).
3. Greedy generation of 256 tokens by the 4 x 128 GPT of `benchmarks/gpt.py` (tokens/s): its weights
   are small enough to stay in cache, so this measures the cost per call (F.linear, or the loop).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, environment  # noqa: E402
from onednn_linear import decode_step, generation_rate, onednn, per_kernel  # noqa: E402

from qkv.models.gpt import GPT, GPTConfig  # noqa: E402
from qkv.nn import native  # noqa: E402


def read_rates(rounds: int, reps: int = 5) -> None:
    shapes = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12 + [(50257, 768)]
    weights = [torch.randn(shape) for shape in shapes]
    n_bytes = sum(w.numel() * 4 for w in weights)
    x = {768: torch.randn(1, 768), 3072: torch.randn(1, 3072)}
    single_row = native.kernel("matvec")
    kernels = {"sum()": lambda x, w: w.sum(), "F.linear (MKL)": F.linear, "oneDNN": onednn}
    if single_row is not None:
        kernels["qkv matvec"] = lambda x, w: single_row(x, w, None)
    rates: dict[str, list[float]] = {name: [] for name in kernels}
    with torch.inference_mode():
        for r in range(rounds):
            for name, product in kernels.items() if r % 2 == 0 else reversed(kernels.items()):
                [product(x[w.size(1)], w) for w in weights]  # warm-up pass: page in, wake threads
                start = time.perf_counter()
                for _ in range(reps):
                    [product(x[w.size(1)], w) for w in weights]
                rates[name].append(reps * n_bytes / (time.perf_counter() - start) / 1e9)
    for name, values in rates.items():
        print(
            f"products over {n_bytes / 1e6:.0f} MB, {name}: {statistics.median(values):.1f} GB/s "
            f"(rounds: {', '.join(f'{v:.1f}' for v in values)})"
        )


def generation(new_tokens: int = 64, config: GPTConfig | None = None):
    torch.manual_seed(0)
    model = GPT(config or GPTConfig(dropout=0.0, attention_dropout=0.0)).eval()
    prompt = list(range(16))
    run = generation_rate(model, prompt, new_tokens)
    run()  # warm-up
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if native.kernel("matvec") is None:
        print("the matvec kernel could not be built here: only F.linear and oneDNN are compared")
    print(environment())
    read_rates(args.rounds)
    kernels = ("pytorch", "onednn", "auto")
    step = alternate(per_kernel(decode_step(), kernels), args.rounds)
    print(
        "124M GPT cached decoding step: "
        + ", ".join(f"{k} {step[k]:.1f}" for k in kernels)
        + f" ms; auto against oneDNN {step['onednn'] / step['auto']:.3f}x"
    )
    tokens = alternate(per_kernel(generation(), kernels), args.rounds)
    print(
        "124M GPT greedy generation, 64 tokens: "
        + ", ".join(f"{k} {tokens[k]:.1f}" for k in kernels)
        + f" tokens/s; auto against oneDNN {tokens['auto'] / tokens['onednn']:.3f}x"
    )
    small = GPTConfig(
        vocab_size=65, block_size=512, d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0, attention_dropout=0.0
    )
    tokens = alternate(per_kernel(generation(256, small), ("pytorch", "auto")), 3 * args.rounds)
    print(
        f"4 x 128 GPT greedy generation, 256 tokens: F.linear {tokens['pytorch']:.0f}, auto {tokens['auto']:.0f}"
        f" tokens/s: {tokens['auto'] / tokens['pytorch']:.3f}x"
    )


if __name__ == "__main__":
    main()
