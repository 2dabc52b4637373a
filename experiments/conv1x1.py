"""Experiment 7: a linear layer is a 1x1 convolution (sec 3.3: "two convolutions with kernel size 1").

The Q/K/V projection of qkv's self-attention is one nn.Linear(D, 3D) applied to every position. The
same weights as a Conv1d with kernel size 1 (the form GPT-2's code uses, as `Conv1D`) give the same
outputs; this checks that, then times both and measures the memory each allocates, forward and backward.

    python experiments/conv1x1.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/conv1x1.py --fast    # the test suite's version

Prints a table and writes docs/img/experiment_conv1x1.png.
"""

from __future__ import annotations

import time

import torch
from common import legend_grid, parse_args, print_table, pyplot, save_figure
from torch import nn
from torch.profiler import ProfilerActivity, profile

from qkv.nn.attention import SelfAttention

D = 512


def as_conv(linear: nn.Linear) -> nn.Conv1d:
    """The same map as a Conv1d(D_in, D_out, kernel_size=1): weight (D_out, D_in) -> (D_out, D_in, 1)."""
    conv = nn.Conv1d(linear.in_features, linear.out_features, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.unsqueeze(-1))
        conv.bias.copy_(linear.bias)
    return conv


def conv_apply(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """(B, T, D) -> (B, T, 3D): Conv1d wants channels first, (B, D, T)."""
    return conv(x.transpose(1, 2)).transpose(1, 2)


def max_difference(batch: int, length: int) -> float:
    torch.manual_seed(0)
    linear = SelfAttention(D, 8).qkv
    x = torch.randn(batch, length, D)
    with torch.no_grad():
        return (linear(x) - conv_apply(as_conv(linear), x)).abs().max().item()


def measure(f, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(seconds per forward + backward, MiB allocated during one of them)."""
    f(x).sum().backward()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        f(x).sum().backward()
    seconds = (time.perf_counter() - start) / repeats
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        f(x).sum().backward()
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages())
    return seconds, allocated / 2**20


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_conv1x1.png")
    lengths, repeats = ((64, 256), 2) if args.fast else ((64, 256, 1024, 4096), 10)
    torch.manual_seed(0)
    linear = SelfAttention(D, 8).qkv
    conv = as_conv(linear)
    rows = []
    for t in lengths:
        x = torch.randn(8, t, D, requires_grad=True)
        lin_s, lin_mb = measure(linear, x, repeats)
        conv_s, conv_mb = measure(lambda y: conv_apply(conv, y), x, repeats)
        rows.append([t, max_difference(8, t), lin_s * 1e3, conv_s * 1e3, lin_mb, conv_mb])
    print_table(
        f"Q/K/V projection D={D} -> {3 * D}, batch 8: nn.Linear vs Conv1d(kernel 1), forward + backward",
        ["T", "max_abs_diff", "linear_ms", "conv1x1_ms", "linear_MiB", "conv1x1_MiB"],
        [[r[0], r[1], *(round(v, 2) for v in r[2:])] for r in rows],
    )
    if not args.fast:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(lengths, [r[2] for r in rows], "o-", label="nn.Linear")
        ax.plot(lengths, [r[3] for r in rows], "o-", label="Conv1d, kernel 1")
        ax.set(title="Q/K/V projection, forward + backward", xlabel="T", ylabel="ms", xscale="log", yscale="log")
        legend_grid(ax)
        save_figure(fig, args.plot)


if __name__ == "__main__":
    main()
