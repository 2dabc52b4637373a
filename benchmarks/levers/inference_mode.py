"""What `torch.inference_mode` gives decoding, against `torch.no_grad`.

    python benchmarks/levers/inference_mode.py [--rounds 4]      (needs runs/multi30k_de_en/best)

The trained Multi30k de->en model decodes the first 512 test2016 sources in batches of 64 (sorted by
length), greedy and beam 4, two ways: qkv's decoders as they are (decorated with
`torch.inference_mode()`: tensors made inside carry no version counters or autograd metadata) and the
same functions undecorated (`__wrapped__`) inside `torch.no_grad()` (nothing is recorded, but every
tensor still keeps that bookkeeping). With autograd left on the decoders do not run at all: the cache
reorder selects `out=` into its buffers, which autograd refuses. Sentences/s, medians of alternating
rounds; the outputs must be identical.
"""

import argparse
import contextlib
import statistics
import time

import torch
from test2016 import model_and_batches

from qkv.decoding.beam import beam_search
from qkv.decoding.greedy import greedy_decode

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="runs/multi30k_de_en/best")
parser.add_argument("--rounds", type=int, default=4)
args = parser.parse_args()
model, batches = model_and_batches(args.model, "../shared/data/multi30k/test2016.de")
sentences = sum(len(b) for b in batches)

MODES = {  # (how the decoder is called, the context around it)
    "inference_mode": (lambda f: f, contextlib.nullcontext),
    "no_grad": (lambda f: f.__wrapped__, torch.no_grad),
}
DECODERS = {
    "greedy": lambda f, src: f(greedy_decode)(model, src, src.size(1) + 50).tolist(),
    "beam 4": lambda f, src: [h.tokens for h in f(beam_search)(model, src, 4, 0.6, 50)],
}

for name, decode in DECODERS.items():
    modes = list(MODES)
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    outputs = {}
    for r in range(args.rounds):
        for mode in modes[:: 1 if r % 2 == 0 else -1]:
            pick, context = MODES[mode]
            start = time.perf_counter()
            with context():
                outputs[mode] = [decode(pick, src) for src in batches]
            rates[mode].append(sentences / (time.perf_counter() - start))
    assert all(outputs[mode] == outputs["inference_mode"] for mode in modes), "outputs differ"
    med = {mode: statistics.median(v) for mode, v in rates.items()}
    ratios = ", ".join(f"inference_mode / {m} {med['inference_mode'] / med[m]:.3f}x" for m in modes[1:])
    rates_text = ", ".join(f"{m} {med[m]:.1f}" for m in modes)
    print(f"{name}: sentences/s {rates_text}; {ratios} (threads {torch.get_num_threads()})")
