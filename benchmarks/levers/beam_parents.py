"""How often a beam-search cache row keeps its own history (its parent is the row itself): copying
only the rows that change would pay off only if most rows stayed.

    python benchmarks/levers/beam_parents.py [--model runs/multi30k_de_en/best]
"""

import argparse

import torch

from qkv.checkpoint import load
from qkv.data.padding import pad_sequences
from qkv.data.subword import PairTokenizer
from qkv.decoding.beam import beam_search
from qkv.nn.cache import LayerCache

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="runs/multi30k_de_en/best")
parser.add_argument("--src", default="../shared/data/multi30k/test2016.de")
args = parser.parse_args()
model = load(args.model).eval()
tok = PairTokenizer.load(args.model)
ids = tok.encode_src(open(args.src, encoding="utf-8").read().splitlines()[:512])
order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
c = model.config
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
    for j in range(0, len(order), 64):
        beam_search(model, pad_sequences([ids[i] + [c.eos_id] for i in order[j : j + 64]], c.pad_id), 4, 0.6, 50)
print(f"{kept:,} of {rows:,} reordered rows keep their own history ({kept / rows:.1%})")
