"""Cost of one self-attention layer against sequence length (sec 4: O(n^2 d) per layer).

    python benchmarks/attention_scaling.py      # writes docs/img/attention_scaling.png
    python benchmarks/attention_scaling.py --device cuda --dtype bfloat16   # docs/img/attention_scaling_cuda.png

Forward time of qkv's SelfAttention (d_model 512, 8 heads, batch 1) through SDPA, and of the eager
reference that materialises the (n x n) weights, for n = 64 .. 4096, with the peak memory of each
(tracemalloc cannot see torch's allocator, so memory is read from the profiler's allocation records;
on a GPU from CUDA's allocator statistics). On a GPU in bfloat16 the SDPA side is held to the
FlashAttention kernel (an error, not a silent fallback, if SDPA cannot use it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).parent))
from common import device_argument, environment, sync, timed  # noqa: E402

from qkv.nn.attention import SelfAttention, eager_attention  # noqa: E402

D, H = 512, 8


def peak_bytes(fn, device: str) -> int:
    """Largest total of live allocations during fn() beyond what was live before it: on a GPU from the
    caching allocator's peak counter, on the CPU from the profiler's memory events."""
    if device == "cuda":
        sync()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        sync()
        return torch.cuda.max_memory_allocated() - before
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--max-n", type=int, default=4096, help="longest sequence, doubling from 64 (default: 4096)")
    device_argument(parser)
    args = parser.parse_args()
    dtype, device = getattr(torch, args.dtype), args.device
    flash = device == "cuda" and dtype == torch.bfloat16
    torch.manual_seed(0)
    layer = SelfAttention(D, H).eval().to(device, dtype)
    rows = []
    with torch.inference_mode():
        for n in (64 * 2**i for i in range(int(math.log2(args.max_n // 64)) + 1)):
            x = torch.randn(1, n, D, device=device, dtype=dtype)

            def eager():
                b, t, _ = x.shape
                q, k, v = layer.qkv(x).view(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
                y, _ = eager_attention(q, k, v, is_causal=True)
                return layer.out(y.transpose(1, 2).reshape(b, t, D))

            def sdpa():
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION) if flash else contextlib.nullcontext():
                    return layer(x, is_causal=True)

            row = {"n": n}
            for name, fn in (("sdpa", sdpa), ("eager", eager)):
                fn()
                # a GPU runs the short ones in microseconds: more repetitions to outlast the clock's grain
                reps = max(1, int((2e8 if device == "cuda" else 2e6) // (n * n)))

                def repeated(fn=fn, reps=reps) -> None:  # outputs dropped as made, not held in a list
                    for _ in range(reps):
                        fn()

                row[f"{name}_ms"] = round(timed(repeated) / reps * 1e3, 4)
                row[f"{name}_peak_mib"] = round(peak_bytes(fn, device) / 2**20, 1)
            rows.append(row)
            record = {"benchmark": "attention_scaling", **row, "dtype": args.dtype}
            print(json.dumps({**record, **({"sdpa_kernel": "flash"} if flash else {}), **environment()}), flush=True)
    name = "attention_scaling.png" if device == "cpu" else "attention_scaling_cuda.png"
    gpu = torch.cuda.get_device_name().removeprefix("NVIDIA ") if device == "cuda" else ""
    where = "CPU, float32" if device == "cpu" else f"{gpu}, {args.dtype}"
    plot(rows, Path(__file__).resolve().parents[1] / "docs" / "img" / name, where, "sdpa (flash)" if flash else "sdpa")


def plot(rows, path: Path, where: str, sdpa_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in ("sdpa", "eager"):
        label = sdpa_label if name == "sdpa" else name
        a.loglog(n, [r[f"{name}_ms"] for r in rows], "o-", label=label)
        b.loglog(n, [r[f"{name}_peak_mib"] for r in rows], "o-", label=label)
    ref = [rows[-1]["eager_ms"] * (x / n[-1]) ** 2 for x in n]
    a.loglog(n, ref, "k:", label="n^2 slope")
    a.set(title=f"Self-attention forward, d 512, 8 heads ({where})", xlabel="sequence length n", ylabel="ms")
    b.set(title="Peak memory of the forward pass", xlabel="sequence length n", ylabel="MiB")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
