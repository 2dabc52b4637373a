"""How often a beam-search cache row keeps its own history (its parent is the row itself): copying
only the rows that change would pay off only if most rows stayed.

    python benchmarks/levers/beam_parents.py [--model runs/multi30k_de_en/best]
"""

import argparse

import torch
from test2016 import model_and_batches

from qkv.decoding.beam import beam_search
from qkv.nn.cache import LayerCache

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="runs/multi30k_de_en/best")
parser.add_argument("--src", default="../shared/data/multi30k/test2016.de")
args = parser.parse_args()
model, batches = model_and_batches(args.model, args.src)
rows = kept = 0
reorder = LayerCache.reorder


def counting(self, index, cross_index=None):
    global rows, kept
    if self.k is not None and cross_index is None:  # the batch keeps its size: row i may keep its history
        rows += len(index)
        kept += int((index == torch.arange(len(index))).sum())
    return reorder(self, index, cross_index)


LayerCache.reorder = counting
with torch.inference_mode():
    for b in batches:
        beam_search(model, b, 4, 0.6, 50)
print(f"{kept:,} of {rows:,} reordered rows keep their own history ({kept / rows:.1%})")
