"""What each of qkv's decoding kernels gives, in one process on the same batches: session 28's products of
several rows on oneDNN with packed weights (and the FFN's ReLU inside them; `qkv.nn.linear`), a single
query's attention in qkv's kernel instead of SDPA (`qkv.nn.short_attention`) and greedy's first
maximum from chunk maxima (`qkv.decoding.argmax.first_argmax`); then session 30's greedy next token
screened with 8-bit integer scores (`qkv.decoding.argmax`, greedy only: beam search needs every score)
and the residual add + LayerNorm in one compiled pass (`qkv.nn.block.residual_norm`).

    python benchmarks/levers/decoding_kernels.py [--model runs/multi30k_de_en/best] [--rounds 5]

Each setting turns the changes on one by one, cumulatively, from "before" (all five off). Prints
sentences/s (medians of alternating rounds) for greedy and beam 4, and whether outputs are identical.
"""

import argparse
import statistics
import time
from contextlib import ExitStack, contextmanager

import torch
from test2016 import model_and_batches

import qkv.decoding.argmax as argmax
import qkv.decoding.greedy as greedy
import qkv.nn.block as block
import qkv.nn.linear as qlinear
from qkv.decoding.beam import beam_search
from qkv.nn import short_attention


@contextmanager
def swapped(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def several_queries_only(q, k, v, mask, is_causal, dropout_p, applies=short_attention.applies):
    return q.size(-2) > 1 and applies(q, k, v, mask, is_causal, dropout_p)


OFF = {
    "packed": (qlinear, "MIN_PACKED", 2**62),
    "one_query": (short_attention, "applies", several_queries_only),
    "argmax": (argmax, "first_argmax", lambda x: x.max(-1).indices),
    "screened": (argmax, "enabled", False),
    "norm": (block, "residual_norm", lambda norm, skip, y: norm(skip + y)),
}
SETTINGS = {  # each turns on one more change
    "before": ("packed", "one_query", "argmax", "screened", "norm"),
    "+packed": ("one_query", "argmax", "screened", "norm"),
    "+one_query": ("argmax", "screened", "norm"),
    "+argmax": ("screened", "norm"),
    "+screened": ("norm",),
    "+norm": (),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/multi30k_de_en/best")
    parser.add_argument("--src", default="../shared/data/multi30k/test2016.de")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model, batches = model_and_batches(args.model, args.src)
    sentences = sum(b.size(0) for b in batches)

    def decode(beam):
        with torch.inference_mode():
            if beam == 1:
                return [greedy.greedy_decode(model, b, b.size(1) + 51).tolist() for b in batches]
            return [[h.tokens for h in beam_search(model, b, beam, 0.6, 50)] for b in batches]

    def run(setting, beam):
        with ExitStack() as stack:
            for name in SETTINGS[setting]:
                stack.enter_context(swapped(*OFF[name]))
            start = time.perf_counter()
            out = decode(beam)
            return time.perf_counter() - start, out

    for beam in (1, 4):
        outputs = {s: run(s, beam)[1] for s in SETTINGS}  # also the warm-up
        times = {s: [] for s in SETTINGS}
        for _ in range(args.rounds):
            for s in SETTINGS:
                times[s].append(run(s, beam)[0])
        rates = {s: round(sentences / statistics.median(t), 1) for s, t in times.items()}
        same = {s: outputs[s] == outputs["before"] for s in SETTINGS}
        print(
            f"beam {beam}: sentences/s {rates}; against before: {rates['+norm'] / rates['before']:.3f}x; "
            f"outputs identical to before: {same}"
        )


if __name__ == "__main__":
    main()
