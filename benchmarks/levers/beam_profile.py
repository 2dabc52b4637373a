"""Where beam decoding (beam 4, batches of 64, 512 test2016 sentences) spends its time.

    python benchmarks/levers/beam_profile.py [--model runs/multi30k_de_en/best]

Prints the torch.profiler table (operators by their own time) and, from cProfile, the share of the
time spent in beam search's own Python (`beam_search` and `_advance`, without the calls they make).
"""

import argparse
import cProfile
import pstats

import torch
from test2016 import model_and_batches
from torch.profiler import ProfilerActivity, profile

from qkv.decoding.beam import beam_search

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="runs/multi30k_de_en/best")
parser.add_argument("--src", default="../shared/data/multi30k/test2016.de")
args = parser.parse_args()
model, batches = model_and_batches(args.model, args.src)


def run() -> None:
    with torch.inference_mode():
        for b in batches:
            beam_search(model, b, 4, 0.6, 50)


run()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    run()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
profiler = cProfile.Profile()
profiler.runcall(run)
stats = pstats.Stats(profiler).stats
own = sum(v[2] for k, v in stats.items() if k[0].endswith("beam.py") and k[2] in ("beam_search", "_advance"))
total = max(v[3] for v in stats.values())
print(f"beam search's own Python: {own:.3f} s of {total:.3f} s ({own / total:.1%})")
