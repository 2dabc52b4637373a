"""Decoding with one query per row: SDPA against eq. (1) written out (`eager_attention`), end to end.

    python benchmarks/levers/decode_attention.py [--threads 2]

A random Multi30k-shaped model (d 256, 8 heads, 3 + 3 layers, vocab 8,000) decodes 64 random sources of
16 tokens, greedy (30 steps) and beam 4 (30 steps): the step shapes of the decoding benchmark, where a
bare attention call with 512-2,048 rows of one query and a few dozen keys looked faster written out.
The written-out variant is switched in through `attention.written_out_is_faster` (fp32 CPU, one query,
B*H >= 512, <= 256 keys). Medians of alternating rounds, ms per batch.
"""

import argparse
import statistics
import time

import torch

import qkv.nn.attention as attention
from qkv.decoding.beam import beam_search
from qkv.decoding.greedy import greedy_decode
from qkv.models.seq2seq import EncoderDecoder, small_config

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=4)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = EncoderDecoder(small_config(8000)).eval()
src = torch.randint(4, 8000, (64, 16))
sdpa = attention.written_out_is_faster


def written_out(q, k):
    one_query_many_rows = q.size(-2) == 1 and q.size(0) * q.size(1) >= 512 and k.size(-2) <= 256
    return sdpa(q, k) or (q.device.type == "cpu" and one_query_many_rows)


times, outs = {}, {}
for r in range(args.rounds):
    for name, rule in (("sdpa", sdpa), ("written_out", written_out))[:: 1 if r % 2 == 0 else -1]:
        attention.written_out_is_faster = rule
        start = time.perf_counter()
        greedy = greedy_decode(model, src, 30)
        middle = time.perf_counter()
        beam = [h.tokens for h in beam_search(model, src, 4, 0.6, 14)]
        times.setdefault(name, []).append((middle - start, time.perf_counter() - middle))
        outs[name] = (greedy.tolist(), beam)
attention.written_out_is_faster = sdpa
for name, t in times.items():
    greedy_ms = 1e3 * statistics.median(x[0] for x in t)
    beam_ms = 1e3 * statistics.median(x[1] for x in t)
    print(f"{name}: greedy {greedy_ms:.0f} ms, beam {beam_ms:.0f} ms ({args.threads} threads)")
print("identical outputs:", outs["sdpa"] == outs["written_out"])
