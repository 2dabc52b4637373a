"""Batch-1 greedy generation's next token from the output layer in 8-bit integers (session 38,
`qkv.decoding.argmax.integer_argmax`, `qkv/nn/integer_scores.cpp`), against float32 scores.

    python benchmarks/levers/integer_head.py [--rounds 11] [--tokens 128]

1. One row's scores against GPT-2's output layer (50,257 x 768, random), with the weight out of cache
   as in generation (a 256 MB sweep before each call; medians of the rounds): qkv's `int8_matvec`,
   `torch._int_mm` on the same integers, and the float32 product (`F.linear`). Then rounding the weight:
   qkv's `quantize_weight` against the same rounding in PyTorch operations.
2. Greedy generation from a random `gpt2`-shaped model (16-token prompt, --tokens new ones), tokens/s,
   alternating rounds with the integer route on and off (`argmax.enabled`), and whether the tokens agree.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate  # noqa: E402

import qkv.decoding.argmax as argmax  # noqa: E402
from qkv.decoding.generate import generate  # noqa: E402
from qkv.models.gpt import GPT, GPTConfig  # noqa: E402
from qkv.nn import native  # noqa: E402


def torch_rounding(w: torch.Tensor) -> tuple:
    """The rounding `quantize_weight` does, as PyTorch operations (what `argmax.quantized` ran until
    session 38)."""
    top = w.abs().max().item()
    t = float(torch.tensor(top / 127 if top > 0 else 1.0, dtype=torch.float32))
    p = (w * (1 / t)).round_().clamp_(-127, 127).to(torch.int8)
    return p, t, w.abs().sum(1).max().item() * (1 + 2**-10)


def cold_ms(fns: dict, rounds: int) -> dict:
    """Median milliseconds of each call, a 256 MB sweep before every call."""
    sweep = torch.randn(64 * 2**20)
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sweep.mul_(1.0)
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if not argmax.integer_products() or native.kernel("int8_matvec") is None:
        sys.exit("this processor has no AVX512-VNNI (or qkv's kernels did not build): the route is off here")
    torch.manual_seed(0)
    model = GPT(GPTConfig(dropout=0.0, attention_dropout=0.0)).eval()
    w = model.output.weight.detach()
    integer = argmax.quantized(w)
    q = native.kernel("quantize_rows")(torch.randn(1, w.size(1)))[0]
    x = torch.randn(1, w.size(1))
    assert torch.equal(native.kernel("int8_matvec")(q, integer.p), torch._int_mm(q.repeat(17, 1), integer.p.t())[:1])
    ms = cold_ms(
        {
            "int8_matvec": lambda: native.kernel("int8_matvec")(q, integer.p),
            "_int_mm": lambda: torch._int_mm(q, integer.p.t()),
            "float32": lambda: F.linear(x, w),
        },
        args.rounds,
    )
    print("one row against GPT-2's output layer, out of cache, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()))
    rounding = cold_ms({"quantize_weight": lambda: argmax.quantized(w), "torch": lambda: torch_rounding(w)}, 3)
    print("rounding the weight, ms: " + ", ".join(f"{k} {v:.1f}" for k, v in rounding.items()))

    prompt = torch.randint(0, 50257, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    outputs = {}

    def run(on: bool) -> float:
        argmax.enabled = on
        try:
            start = time.perf_counter()
            outputs[on] = list(generate(model, prompt, args.tokens, temperature=0.0))
            return args.tokens / (time.perf_counter() - start)
        finally:
            argmax.enabled = True

    run(True)  # the first generation records each window's step once for the process's kernels
    rates = alternate({"integer": lambda: run(True), "float32": lambda: run(False)}, max(3, args.rounds // 3))
    print(
        f"gpt2-shaped greedy generation, {args.tokens} tokens, tokens/s: integer head {rates['integer']:.1f}, "
        f"float32 scores {rates['float32']:.1f} ({rates['integer'] / rates['float32']:.3f}x); "
        f"tokens identical: {outputs[True] == outputs[False]}"
    )


if __name__ == "__main__":
    main()
