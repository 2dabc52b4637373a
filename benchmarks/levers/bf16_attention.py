"""bf16 attention on the CPU: SDPA's fused kernel against the written-out eq. (1), forward + backward.

Inputs are bf16 as bf16 autocast makes them (the q/k/v projection's output); a padding mask like BERT's.
Also the bert-small pre-training step (64 x 64 tokens) in fp32, and in bf16 autocast with each attention.
    python benchmarks/levers/bf16_attention.py
"""

import sys
from dataclasses import replace

import torch
import torch.nn.functional as F
from timing import bench

import qkv.nn.attention as attention
from qkv.models.bert import PRESETS, Bert

print("threads", torch.get_num_threads(), "torch", torch.__version__, flush=True)
B, H, D = 64, 4, 64


def sdpa(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def written_out(q, k, v, mask):
    return attention.eager_attention(q, k, v, mask)[0]


for T in (64, 128, 256, 1024):
    b = max(1, B * 64 // T)  # the same number of tokens at every length
    mask = torch.ones(b, 1, T, T, dtype=torch.bool)
    mask[:, :, :, -T // 8 :] = False  # the last eighth is padding
    q, k, v = (torch.randn(b, H, T, D, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    row = [f"T={T} batch {b}"]
    for name, f in (("sdpa", sdpa), ("written-out", written_out)):
        row.append(f"{name} {bench(lambda f=f: f(q, k, v, mask).sum().backward(), n=5):.1f} ms")
    print(", ".join(row), flush=True)


def step_time(precision, attend_bf16):
    """ms per bert-small pre-training step; attend_bf16 picks the bf16 attention ("sdpa"/"written-out")."""
    torch.manual_seed(0)
    m = Bert(replace(PRESETS["bert-small"], dropout=0.0, attention_dropout=0.0))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    chosen = attention.written_out_is_faster
    if attend_bf16 == "sdpa":
        attention.written_out_is_faster = lambda q, k: False

    def step():
        tok = torch.randint(5, 8000, (64, 64), generator=g)
        seg = (torch.arange(64) > 32).long().expand(64, 64)
        pred = torch.rand(64, 64, generator=g) < 0.15
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = m(tok, seg, predict=pred)
            loss = F.cross_entropy(out.logits.float(), tok[pred]) + F.cross_entropy(
                out.nsp_logits.float(), torch.randint(0, 2, (64,), generator=g)
            )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = bench(step, n=10)
    attention.written_out_is_faster = chosen
    return t


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
for r in range(rounds):  # alternate, so a change in machine load hits every variant
    for precision, att in (("fp32", "sdpa"), ("bf16", "sdpa"), ("bf16", "written-out")):
        print(f"round {r + 1}: bert-small step {precision} ({att}): {step_time(precision, att):.0f} ms", flush=True)
