"""What the fused projections give: one (D -> 3D) matrix product for self-attention's Q, K and V and one
(D -> 2D) for cross-attention's K and V, against separate products per projection (session 14).

    python benchmarks/levers/fused_projections.py [--rounds 5]    (decoding needs runs/multi30k_de_en/best)

The separate variant exists only here, to measure: each attention layer of a copy of the model gets
three (or two) `nn.Linear` layers holding the rows of its fused weight, and a forward that calls them
one by one; everything else is qkv's code. Two measurements, medians of alternating rounds:
1. training, the shape of `benchmarks/seq2seq_train.py` (Multi30k config, 64 x (24 + 24) random tokens,
   dropout 0.1, label smoothing 0.1, Adam), tokens/s;
2. greedy decoding with the trained de->en model, 512 test2016 sentences in batches of 64,
   sentences/s (the outputs are compared: the same numbers in other matrix-product shapes may round
   differently in the last bit, so a rare different word would not be an error).
"""

import argparse
import copy
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1]))
from seq2seq_train import SHAPES, qkv_model  # noqa: E402
from test2016 import model_and_batches  # noqa: E402

from qkv.decoding.greedy import greedy_decode  # noqa: E402
from qkv.nn.attention import CrossAttention, SelfAttention  # noqa: E402


def heads(self, y):  # (B, T, D) -> (B, H, T, d_head)
    return y.view(y.size(0), y.size(1), self.n_heads, self.d_head).transpose(1, 2)


def separate_self(self, x, mask=None, is_causal=False, cache=None, need_weights=False):
    q, k, v = heads(self, self.q_sep(x)), heads(self, self.k_sep(x)), heads(self, self.v_sep(x))
    if cache is not None:
        k, v = cache.append(k, v)
    return self._attend(q, k, v, mask, is_causal, need_weights)


def separate_cross(self, x, memory, mask=None, cache=None, need_weights=False):
    q = heads(self, self.q(x))
    if cache is not None and cache.cross_k is not None:
        k, v = cache.cross_k, cache.cross_v
    else:
        k, v = heads(self, self.k_sep(memory)), heads(self, self.v_sep(memory))
        if cache is not None:
            cache.cross_k, cache.cross_v = k, v
    return self._attend(q, k, v, mask, False, need_weights, groups=x.size(0) // k.size(0))


def split(fused: nn.Linear, parts: int) -> list[nn.Linear]:
    """`parts` Linear layers holding consecutive row blocks of a fused one (copies of its weights)."""
    d = fused.in_features
    out = []
    for w, b in zip(fused.weight.detach().chunk(parts), fused.bias.detach().chunk(parts)):
        layer = nn.Linear(d, w.size(0))
        layer.weight.data.copy_(w)
        layer.bias.data.copy_(b)
        out.append(layer)
    return out


def separated(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, SelfAttention):
            m.q_sep, m.k_sep, m.v_sep = split(m.qkv, 3)
            del m.qkv  # its parameters would otherwise sit in the optimiser unused
            m.forward = types.MethodType(separate_self, m)
        elif isinstance(m, CrossAttention):
            m.k_sep, m.v_sep = split(m.kv, 2)
            del m.kv
            m.forward = types.MethodType(separate_cross, m)
    return model


def alternate(runs: dict, rounds: int) -> dict[str, float]:
    rates = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:
            rates[name].append(runs[name]())
    return {name: statistics.median(v) for name, v in rates.items()}


def training(rounds: int) -> None:
    x, b, steps = SHAPES["multi30k"], 64, 5
    g = torch.Generator().manual_seed(0)
    data = [tuple(torch.randint(3, x.vocab, (b, n), generator=g) for n in (x.src_len, x.tgt_len, x.tgt_len))]
    torch.manual_seed(0)
    fused = qkv_model(x).train()
    models = {"fused": fused, "separate": separated(fused)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9) for k, m in models.items()}

    def run(name: str):
        def go() -> float:
            model, opt = models[name], opts[name]
            start = time.perf_counter()
            for _ in range(steps):
                src, tgt_in, tgt_out = data[0]
                logits = model(src, tgt_in)
                F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=0, label_smoothing=0.1).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            return steps * b * (x.src_len + x.tgt_len) / (time.perf_counter() - start)

        return go

    for name in models:
        run(name)()  # warm-up: allocator, Adam state
    med = alternate({name: run(name) for name in models}, rounds)
    print(f"training tokens/s: fused {med['fused']:,.0f}, separate {med['separate']:,.0f}: "
          f"{med['fused'] / med['separate']:.3f}x")  # fmt: skip


def decoding(rounds: int, path: str) -> None:
    fused, batches = model_and_batches(path, "../shared/data/multi30k/test2016.de")
    models = {"fused": fused, "separate": separated(fused)}
    sentences = sum(len(b) for b in batches)
    outputs = {}

    def run(name: str):
        def go() -> float:
            start = time.perf_counter()
            outputs[name] = [greedy_decode(models[name], src, src.size(1) + 50).tolist() for src in batches]
            return sentences / (time.perf_counter() - start)

        return go

    med = alternate({name: run(name) for name in models}, rounds)
    same = sum(a == b for x, y in zip(outputs["fused"], outputs["separate"]) for a, b in zip(x, y))
    print(f"greedy decoding sentences/s: fused {med['fused']:.1f}, separate {med['separate']:.1f}: "
          f"{med['fused'] / med['separate']:.3f}x; identical outputs {same} of {sentences}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="runs/multi30k_de_en/best")
    args = parser.parse_args()
    torch.set_num_threads(2)
    training(args.rounds)
    if (Path(args.model) / "model.safetensors").is_file():
        decoding(args.rounds, args.model)
