"""Beam search with the cache's reorder as it is (selected rows copied into fresh buffers) against a
variant that writes them back into the same buffers (no allocation per step): sentences/s, same batches,
outputs compared.
python benchmarks/levers/beam_reorder.py      (needs runs/multi30k_de_en/best)"""

import time

import torch

import qkv.nn.cache as cache
from qkv.checkpoint import load
from qkv.data.subword import PairTokenizer
from qkv.decoding.translate import translate_ids


def reorder_in_place(self, index, cross_index=None):
    """LayerCache.reorder, but the selected rows go back into the first B_new rows of the same buffers."""
    if self.k is not None:
        filled = slice(0, self.length)
        k = self.k[:, :, filled].index_select(0, index)  # (B_new, H, length, d_head), a copy
        v = self.v[:, :, filled].index_select(0, index)
        self.k, self.v = self.k[: len(index)], self.v[: len(index)]  # beam rows only ever leave
        self.k[:, :, filled], self.v[:, :, filled] = k, v
    if cross_index is not None and self.cross_k is not None:
        self.cross_k = self.cross_k.index_select(0, cross_index)
        self.cross_v = self.cross_v.index_select(0, cross_index)


versions = {"fresh_buffers": cache.LayerCache.reorder, "in_place": reorder_in_place}
model = load("runs/multi30k_de_en/best").eval()
tok = PairTokenizer.load("runs/multi30k_de_en/best")
lines = open("../shared/data/multi30k/test2016.de").read().splitlines()[:512]
ids = sorted(tok.encode_src(lines), key=len)
batches = [ids[j : j + 64] for j in range(0, 512, 64)]


def run(name):
    cache.LayerCache.reorder = versions[name]
    t = time.perf_counter()
    outs = [translate_ids(model, b, 4) for b in batches]
    return 512 / (time.perf_counter() - t), outs


res, outs = {name: [] for name in versions}, {}
for r in range(4):
    for name in list(versions)[:: 1 if r % 2 == 0 else -1]:
        rate, outs[name] = run(name)
        res[name].append(rate)
print({k: round(sorted(v)[len(v) // 2], 1) for k, v in res.items()}, "threads", torch.get_num_threads())
print("identical outputs:", outs["fresh_buffers"] == outs["in_place"])
