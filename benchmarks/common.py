"""Shared benchmark harness: alternate the contenders, repeat, report medians as one JSON line."""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import torch


def device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="where both contenders run (default: cpu)"
    )


def environment() -> dict:
    import transformers

    import qkv

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        # the GPU only when this process used it: a CPU run on a machine with a GPU is still a CPU run
        "device": torch.cuda.get_device_name() if torch.cuda.is_initialized() else f"cpu ({cpu})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "qkv_linear": linear_kernel(),
        "transformers": transformers.__version__,
        "qkv_version": qkv.__version__,
    }


def linear_kernel() -> str:
    """Which kernels qkv's linear layers, GELU, dropout and short attention use here (`qkv.nn.linear`,
    `qkv.nn.gelu`, `qkv.nn.dropout`, `qkv.nn.short_attention`): figures differ between them."""
    from qkv.nn import linear, native

    if linear.current_kernel() != "auto":
        return linear.current_kernel()
    built = native.module() is not None
    gelu = (
        "; GELU, dropout, short attention, bias + ReLU, dropout + residual + LayerNorm: qkv's kernels"
        if built
        else "; GELU, dropout, attention: PyTorch's (qkv's kernels not built)"
    )
    if not linear.mkl_runs_generic_code():
        small = ", qkv matvec for single rows of small weights" if built and linear.x86_with_both() else ""
        return "auto: F.linear" + small + gelu
    single_row = "qkv matvec" if built else "oneDNN (matvec not built)"
    return f"auto: oneDNN for large fp32 CPU products, {single_row} for single rows" + gelu


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Run each contender once per round, in alternating order; each call returns its own rate.
    Returns the median rate of each (alternation spreads machine noise over both)."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            rates[name].append(contenders[name]())
    return {name: statistics.median(v) for name, v in rates.items()}


def sync() -> None:
    """Wait for queued GPU work (CUDA runs asynchronously: a host clock read without this times the launches)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def report(benchmark: str, unit: str, rates: dict[str, float], baseline: str, ours: str = "qkv", **extra) -> dict:
    record = {"benchmark": benchmark, "unit": unit, **{k: round(v, 2) for k, v in rates.items()}}
    record[f"ratio_vs_{baseline}"] = round(rates[ours] / rates[baseline], 3)
    record.update(extra)
    record.update(environment())
    print(json.dumps(record), flush=True)
    return record
