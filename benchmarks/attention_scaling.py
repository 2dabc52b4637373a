"""Cost of one self-attention layer against sequence length (sec 4: O(n^2 d) per layer).

    python benchmarks/attention_scaling.py      # writes docs/img/attention_scaling.png

Forward time of qkv's SelfAttention (d_model 512, 8 heads, batch 1) through SDPA, and of the eager
reference that materialises the (n x n) weights, for n = 64 .. 4096, with the peak memory of each
(tracemalloc cannot see torch's allocator, so memory is read from the profiler's allocation records).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import environment  # noqa: E402

from qkv.nn.attention import SelfAttention, eager_attention  # noqa: E402

D, H = 512, 8


def peak_bytes(fn) -> int:
    """Largest total of live CPU allocations during fn(), from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    events = sorted((e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    for e in events:
        live += e.cpu_memory_usage
        peak = max(peak, live)
    return peak


def main() -> None:
    torch.manual_seed(0)
    layer = SelfAttention(D, H).eval()
    rows = []
    with torch.inference_mode():
        for n in (64, 128, 256, 512, 1024, 2048, 4096):
            x = torch.randn(1, n, D)

            def eager():
                b, t, _ = x.shape
                q, k, v = layer.qkv(x).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
                y, _ = eager_attention(q, k, v, is_causal=True)
                return layer.out(y.transpose(1, 2).reshape(b, t, D))

            sdpa = lambda: layer(x, is_causal=True)  # noqa: E731
            row = {"n": n}
            for name, fn in (("sdpa", sdpa), ("eager", eager)):
                fn()
                reps = max(1, int(2e6 // (n * n)))
                start = time.perf_counter()
                for _ in range(reps):
                    fn()
                row[f"{name}_ms"] = round((time.perf_counter() - start) / reps * 1e3, 3)
                row[f"{name}_peak_mib"] = round(peak_bytes(fn) / 2**20, 1)
            rows.append(row)
            print(json.dumps({"benchmark": "attention_scaling", **row, **environment()}), flush=True)
    plot(rows, Path(__file__).resolve().parents[1] / "docs" / "img" / "attention_scaling.png")


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in ("sdpa", "eager"):
        a.loglog(n, [r[f"{name}_ms"] for r in rows], "o-", label=name)
        b.loglog(n, [r[f"{name}_peak_mib"] for r in rows], "o-", label=name)
    ref = [rows[-1]["eager_ms"] * (x / n[-1]) ** 2 for x in n]
    a.loglog(n, ref, "k:", label="n^2 slope")
    a.set(title="Self-attention layer forward time (d 512, 8 heads)", xlabel="sequence length n", ylabel="ms")
    b.set(title="Peak memory of the forward pass", xlabel="sequence length n", ylabel="MiB")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
