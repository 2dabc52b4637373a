"""Why experiment 1's unscaled model also trains slower on a CPU: denormal floats.

    python benchmarks/levers/denormal_steps.py [--steps 200] [--threads 1]

Experiment 1's reversal model (one head of d_k = 256; `experiments/attention_scale.py`), trained with
and without the 1/sqrt(d_k) scale. Without it softmax saturates (footnote 4), and its backward then
produces values below float32's smallest normal number (1.2e-38), which x86 cores handle far more
slowly in the matrix products that take them as operands. Run three ways: unscaled, unscaled with
`torch.set_flush_denormal(True)` (such values become 0), and scaled. Prints milliseconds per training
step (forward, backward, Adam) in blocks of 25 steps. One thread by default: the flush setting holds
for the calling thread only, so a second OpenMP thread would keep part of the slowdown.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import attention_scale  # noqa: E402
import common  # noqa: E402  (experiments/common.py, not benchmarks/common.py)

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

for scale, flush in (("none", False), ("none", True), ("sqrt_dk", False)):
    torch.set_flush_denormal(flush)
    cfg = common.toy_config(common.REVERSE, d_model=256, n_heads=1, d_ff=512, attention_scale=scale)
    stamps = []  # one per step, taken after its backward: differences are whole steps
    curve = common.train_toy(
        common.REVERSE,
        cfg,
        args.steps,
        attention_scale.OPTIM,
        on_step=lambda m, s: stamps.append(time.perf_counter()),
        evals=1,
    )
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    blocks = [round(1000 * sum(steps[i : i + 25]) / len(steps[i : i + 25])) for i in range(0, len(steps), 25)]
    print(
        f"scale {scale}{', denormals flushed' if flush else ''}: ms per step by 25-step blocks {blocks}; "
        f"final training loss {curve.final_loss:.3f}",
        flush=True,
    )
torch.set_flush_denormal(False)
