"""Greedy decoding before (commit b523dd4) and after dropping finished rows: sentences/s, same batches.
python benchmarks/levers/greedy_rows.py      (needs runs/multi30k_de_en/best and git)"""

import subprocess
import time
import types

import torch

import qkv.decoding.greedy as new
from qkv.checkpoint import load
from qkv.data.padding import pad_sequences
from qkv.data.subword import PairTokenizer

# the previous greedy_decode, read from git and run as a module of its own
greedy_old = types.ModuleType("greedy_old")
source = subprocess.run(
    ["git", "show", "b523dd4:src/qkv/decoding/greedy.py"], capture_output=True, text=True, check=True
).stdout
exec(compile(source, "greedy_old.py", "exec"), greedy_old.__dict__)

model = load("runs/multi30k_de_en/best").eval()
tok = PairTokenizer.load("runs/multi30k_de_en/best")
lines = open("../shared/data/multi30k/test2016.de").read().splitlines()[:512]
ids = tok.encode_src(lines)
order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
c = model.config
batches = [pad_sequences([ids[i] + [c.eos_id] for i in order[j : j + 64]], c.pad_id) for j in range(0, 512, 64)]


def run(fn):
    t = time.perf_counter()
    outs = [fn(model, b, b.size(1) + 50) for b in batches]
    return 512 / (time.perf_counter() - t), outs


res = {"old": [], "new": []}
for r in range(4):
    for name, fn in (("old", greedy_old.greedy_decode), ("new", new.greedy_decode))[:: 1 if r % 2 == 0 else -1]:
        rate, outs = run(fn)
        res[name].append(rate)
        res[name + "_out"] = outs
print({k: sorted(v)[len(v) // 2] for k, v in res.items() if not k.endswith("_out")})
same = all(torch.equal(a, b) for a, b in zip(res["old_out"], res["new_out"]))
print("identical outputs:", same)
