"""Translation decoding before (commit b8c45af) and after session 7's step changes, same process, same
batches: greedy's argmax read as max(-1).indices, the cache reorder selecting straight into its new
buffers, and beam search ranking K*2K candidates instead of K*V.

    python benchmarks/levers/decode_steps.py [--model runs/multi30k_de_en/best] [--base b8c45af]   (needs git)

--base compares against another commit's decoding code (session 8: 4c79775, before the two-pass top-k).

Prints sentences/s (medians of alternating rounds) and whether the outputs are identical.
"""

import argparse
import statistics
import subprocess
import sys
import time
import types

import torch
from test2016 import model_and_batches

import qkv.decoding.beam as beam_new
import qkv.decoding.greedy as greedy_new
from qkv.nn.cache import LayerCache

BASE = "b8c45af"


def module_at(rev: str, path: str, name: str) -> types.ModuleType:
    """A source file as it was at `rev`, run as a module of its own."""
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    source = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/multi30k_de_en/best")
    parser.add_argument("--src", default="../shared/data/multi30k/test2016.de")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--base", default=BASE, help="the commit whose decoding code is 'before'")
    args = parser.parse_args()
    old = {
        "greedy": module_at(args.base, "src/qkv/decoding/greedy.py", "greedy_old").greedy_decode,
        "beam": module_at(args.base, "src/qkv/decoding/beam.py", "beam_old").beam_search,
        "reorder": module_at(args.base, "src/qkv/nn/cache.py", "cache_old").LayerCache.reorder,
    }
    new = {"greedy": greedy_new.greedy_decode, "beam": beam_new.beam_search, "reorder": LayerCache.reorder}

    model, batches = model_and_batches(args.model, args.src)
    n = sum(b.size(0) for b in batches)

    def run(version: dict, kind: str):
        LayerCache.reorder = version["reorder"]
        start = time.perf_counter()
        if kind == "greedy":
            outs = [version["greedy"](model, b, b.size(1) + 50).tolist() for b in batches]
        else:
            outs = [[h.tokens for h in version["beam"](model, b, 4, 0.6, 50)] for b in batches]
        return n / (time.perf_counter() - start), outs

    for kind in ("greedy", "beam"):
        rates, outs = {"before": [], "after": []}, {}
        for r in range(args.rounds):
            for name, version in (("before", old), ("after", new))[:: 1 if r % 2 == 0 else -1]:
                rate, outs[name] = run(version, kind)
                rates[name].append(rate)
        med = {k: round(statistics.median(v), 1) for k, v in rates.items()}
        print(
            f"{kind}: before {med['before']} sent/s, after {med['after']} sent/s,"
            f" x{med['after'] / med['before']:.3f}; identical outputs: {outs['before'] == outs['after']}",
            flush=True,
        )
    LayerCache.reorder = new["reorder"]


if __name__ == "__main__":
    with torch.inference_mode():
        main()
