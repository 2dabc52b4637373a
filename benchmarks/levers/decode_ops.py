"""Single operations behind session 7's decoding and generation changes, timed alone (microseconds per call).

    python benchmarks/levers/decode_ops.py

- argmax against max(-1).indices over (rows, 8,000) logits (greedy decoding);
- topk(8) against the two-pass `row_topk` over (rows, 8,000) log-probabilities (beam search; session 8);
- the cache reorder of one (256, 8, 32, 32) buffer with 20 positions filled: index_select into a
  temporary and then a copy, against index_select straight into the new buffer (`out=`);
- the same reorder into new buffers with room for 21 positions instead of the old 32;
- one-query attention (beam search's self-attention, 256 rows x 8 heads, 20 keys of 32) over keys and
  values in buffers with room for 21 positions (what a reorder leaves since session 8) against 32 (the
  doubling capacity it kept before);
- at the small GPT's decoding shapes (one token, width 128): a bare `F.linear`, the same through
  `nn.Linear`, and an `nn.Dropout` called in evaluation against not called.
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

from qkv.decoding.beam import row_topk


def us(fn, n: int = 2000) -> float:
    for _ in range(max(10, n // 10)):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


for threads in (1, 2):
    torch.set_num_threads(threads)
    for rows in (64, 256):
        x = torch.randn(rows, 8000)
        assert torch.equal(x.argmax(-1), x.max(-1).indices)
        print(
            f"{threads} thread(s), ({rows}, 8000): argmax {us(lambda: x.argmax(-1), 300):.0f} us,"
            f" max(-1).indices {us(lambda: x.max(-1).indices, 300):.0f} us"
        )
        logp = x.log_softmax(-1)
        assert torch.equal(logp.topk(8, dim=-1).values, row_topk(logp, 8)[0])
        print(
            f"{threads} thread(s), ({rows}, 8000): topk(8) {us(lambda: logp.topk(8, dim=-1), 300):.0f} us,"
            f" row_topk {us(lambda: row_topk(logp, 8), 300):.0f} us"
        )

torch.set_num_threads(1)
buf, index = torch.randn(256, 8, 32, 32), torch.randint(0, 256, (256,))


def two_copies():
    new = buf.new_empty(buf.shape)
    new[:, :, :20] = buf[:, :, :20].index_select(0, index)


def one_copy(room: int = 32):
    new = buf.new_empty(256, 8, room, 32)
    torch.index_select(buf[:, :, :20], 0, index, out=new[:, :, :20])


print(
    f"1 thread, reorder: temporary + copy {us(two_copies, 200):.0f} us, out= {us(one_copy, 200):.0f} us;"
    f" out= into room for 21 positions {us(lambda: one_copy(21), 200):.0f} us"
)

q = torch.randn(256, 8, 1, 32)
for threads in (1, 2):
    torch.set_num_threads(threads)
    took = {}
    for room in (21, 32):
        k, v = torch.randn(256, 8, room, 32)[:, :, :20], torch.randn(256, 8, room, 32)[:, :, :20]
        took[room] = us(lambda: F.scaled_dot_product_attention(q, k, v), 300)
    print(f"{threads} thread(s), one-query SDPA over 20 keys: room for 21 {took[21]:.0f} us, for 32 {took[32]:.0f} us")

torch.set_num_threads(2)
h = torch.randn(1, 1, 128)
linear, drop = nn.Linear(128, 384), nn.Dropout(0.0).eval()
print(
    f"2 threads, one token: F.linear 128->384 {us(lambda: F.linear(h, linear.weight, linear.bias)):.1f} us,"
    f" nn.Linear {us(lambda: linear(h)):.1f} us, nn.Dropout in eval {us(lambda: drop(h)):.1f} us,"
    f" skipped {us(lambda: h if not drop.training else drop(h)):.1f} us"
)
