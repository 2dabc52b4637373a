"""Where qkv's encoder-decoder training step (the shape of `benchmarks/seq2seq_train.py`) spends its time.

    python benchmarks/levers/train_profile.py [--steps 5]

Forward, label-smoothed loss, backward and Adam step, dropout 0.1, 2 threads, as the benchmark runs
them. Prints the torch.profiler table (operators by their own time) and the share of the matrix
products (`mm`, `addmm`, `bmm`, and oneDNN's `mkldnn::_linear_pointwise` where `qkv.nn.linear` uses it):
what is left is the most a faster non-matmul path could save.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parents[1]))
from seq2seq_train import SHAPES, qkv_model, qkv_step  # noqa: E402

SHAPE = SHAPES["multi30k"]  # the benchmark's CPU shape and batch
B, S, T, V = 64, SHAPE.src_len, SHAPE.tgt_len, SHAPE.vocab

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=5)
args = parser.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
model = qkv_model(SHAPE).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)  # as the benchmark
g = torch.Generator().manual_seed(0)
src, tgt_in, tgt_out = (torch.randint(3, V, (B, n), generator=g) for n in (S, T, T))


states_of, criterion = qkv_step(model)  # as qkv's translation task trains


def step() -> None:
    loss = criterion(states_of(src, tgt_in), tgt_out)  # the output layer is applied by the criterion
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


for _ in range(3):  # warm-up: allocator, Adam state
    step()
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    for _ in range(args.steps):
        step()
events = prof.key_averages()
copies = prof.key_averages(group_by_input_shape=True)
print("the largest aten::copy_ by input shapes:")
for e in sorted((e for e in copies if e.key == "aten::copy_"), key=lambda e: -e.self_cpu_time_total)[:6]:
    print(f"  {e.self_cpu_time_total / 1e3:.1f} ms in {e.count} calls, shapes {e.input_shapes}")
print(events.table(sort_by="self_cpu_time_total", row_limit=15))
total = sum(e.self_cpu_time_total for e in events)
share = {e.key: e.self_cpu_time_total / total for e in events}
products = ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise")
matmul = sum(share.get(k, 0.0) for k in products)
print(f"step {total / args.steps / 1e3:.0f} ms under the profiler; matrix products {matmul:.1%} of it")
print(f"dropout masks (aten::bernoulli_) {share.get('aten::bernoulli_', 0.0):.1%}")
# the criterion applies the output layer too (qkv_step), so its share includes that layer's products
loss = sum(e.cpu_time_total for e in events if e.key.startswith("_ChunkedOutputLoss"))  # inclusive
print(f"the output layer and the label-smoothed loss (its backward done in the forward) {loss / total:.1%}")
