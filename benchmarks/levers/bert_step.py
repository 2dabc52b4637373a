"""Step time of bert-small pre-training: eager vs compile, dropout, fused AdamW."""

import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from qkv.models.bert import PRESETS, Bert

T = int(sys.argv[1]) if len(sys.argv) > 1 else 64
B = 64


def make(dropout, compile_, fused):
    torch.manual_seed(0)
    m = Bert(replace(PRESETS["bert-small"], dropout=dropout, attention_dropout=dropout))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=fused)
    f = torch.compile(m) if compile_ else m
    return m, f, opt


def batch(g):
    tok = torch.randint(5, 8000, (B, T), generator=g)
    seg = (torch.arange(T) > T // 2).long().expand(B, T)
    pred = torch.rand(B, T, generator=g) < 0.15
    return tok, seg, pred, tok[pred], torch.randint(0, 2, (B,), generator=g)


def step(f, opt, b):
    tok, seg, pred, tgt, nsp = b
    out = f(tok, seg, predict=pred)
    loss = F.cross_entropy(out.logits, tgt) + F.cross_entropy(out.nsp_logits, nsp)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


variants = {
    "eager d0.1": (0.1, False, False),
    "eager d0": (0.0, False, False),
    "eager d0 fused": (0.0, False, True),
    "compile d0.1 fused": (0.1, True, True),
    "compile d0 fused": (0.0, True, True),
}
built = {}
for name, v in variants.items():
    m, f, opt = make(*v)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(3):
        step(f, opt, batch(g))
    print(name, "warm-up", round(time.perf_counter() - t, 1), "s", flush=True)
    built[name] = (f, opt, g)
times = {n: [] for n in variants}
for r in range(4):
    for n, (f, opt, g) in built.items():
        bs = [batch(g) for _ in range(5)]
        t = time.perf_counter()
        for b in bs:
            step(f, opt, b)
        times[n].append((time.perf_counter() - t) / 5)
for n, ts in times.items():
    ts.sort()
    print(f"{n}: {ts[len(ts) // 2] * 1000:.0f} ms/step, {B * T / ts[len(ts) // 2]:,.0f} tok/s")
