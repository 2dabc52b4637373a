"""One AdamW update of the Multi30k-shaped translation model (97 tensors, 7.6M numbers), the three ways
PyTorch offers: a loop over parameters (its default on the CPU), `foreach` (one call per operation over
all tensors) and `fused` (one kernel over everything), alternating in one process.

    python benchmarks/levers/adam_step.py [--rounds 9]

Prints the median time of one update (ms) for each; `qkv.train.optim.OptimConfig.build` takes `fused`
where every parameter is a plain CPU or CUDA tensor.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate, environment  # noqa: E402
from seq2seq_train import SHAPES, qkv_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(environment())
    params = list(qkv_model(SHAPES["multi30k"]).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    ways = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    optimizers = {k: torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-9, **kw) for k, kw in ways.items()}

    def timed(optimizer, steps: int = 5):
        def run() -> float:
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            return (time.perf_counter() - start) / steps * 1e3

        run()  # the optimiser's state is made on its first step
        return run

    ms = alternate({k: timed(o) for k, o in optimizers.items()}, args.rounds)
    print(
        f"AdamW update, {len(params)} tensors, {sum(p.numel() for p in params):,} numbers: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
        + f"; fused {ms['loop'] / ms['fused']:.2f}x the loop"
    )


if __name__ == "__main__":
    main()
