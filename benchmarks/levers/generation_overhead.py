"""Per-token overhead of small-model generation: dropout modules called in evaluation (where they are
the identity) against skipped, batch 1, 256 new tokens after a 16-token prompt, greedy.

    python benchmarks/levers/generation_overhead.py [--threads 2]

The 4 x 128 GPT of the generation benchmark (random weights). "called" puts back the behaviour
before commit 1f707ff (every nn.Dropout called: nine calls a token); the embedding's *1.0 that the
same commit skips is not restored, so "called" slightly understates the old cost. Tokens/s with and
without the KV cache, medians of alternating rounds.
"""

import argparse
import statistics
import time

import torch

import qkv.nn.block as block
import qkv.nn.embeddings as embeddings
from qkv.decoding.generate import generate
from qkv.models.gpt import GPT, GPTConfig

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=10)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
config = GPTConfig(vocab_size=65, block_size=512, d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0)
model = GPT(config).eval()
prompt = list(range(16))
skipped = block.dropout


def called(module, x):
    return module(x)


def rate(cache: bool) -> float:
    start = time.perf_counter()
    list(generate(model, prompt, 256, temperature=0.0, use_cache=cache))
    return 256 / (time.perf_counter() - start)


rates = {}
for r in range(args.rounds):
    for name, fn in (("called", called), ("skipped", skipped))[:: 1 if r % 2 == 0 else -1]:
        block.dropout = embeddings.dropout = fn
        rates.setdefault(name, []).append(rate(True))
        rates.setdefault(name + " (no cache)", []).append(rate(False))
block.dropout = embeddings.dropout = skipped
med = {k: statistics.median(v) for k, v in rates.items()}
for name in ("called", "skipped"):
    print(
        f"dropout {name}: cached {med[name]:.0f} tok/s, uncached {med[name + ' (no cache)']:.0f},"
        f" ratio {med[name] / med[name + ' (no cache)']:.2f} ({args.threads} threads)"
    )
