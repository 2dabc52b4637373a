"""Lever: what torch.compile gives the encoder-decoder training step, and (on a GPU) where its time goes.

    python benchmarks/levers/compiled_step.py --device cuda --batch 512   # bf16 autocast on a CUDA GPU
    python benchmarks/levers/compiled_step.py --device cpu --dtype float32 --batch 64 --modes default

The benchmark's step (benchmarks/seq2seq_train.py) for qkv and MarianMTModel:
1. on a GPU: the share of the wall time the GPU spends in kernels (profiler), with the number of
   kernels a step launches: a low share means the host (Python, dispatch) sets the pace;
2. tokens/s of each model under torch.compile (default mode; on a GPU also "reduce-overhead", which
   replays CUDA graphs), compile time excluded, each against its own eager rate in the same process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate, device_argument, environment, sync  # noqa: E402
from seq2seq_train import SHAPES, contender, marian_model, qkv_model  # noqa: E402


def kernel_share(run_steps, steps: int) -> dict:
    """GPU kernel time / wall time over `steps` steps, and kernels per step."""
    run_steps()  # warm
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        sync()
        start = time.perf_counter()
        run_steps()
        sync()
        wall = time.perf_counter() - start
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e6  # one stream: kernels do not overlap
    return {"gpu_busy_share": round(busy / wall, 3), "kernels_per_step": len(kernels) // steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--modes", nargs="+", default=["default", "reduce-overhead"], help="torch.compile modes")
    device_argument(parser)
    args = parser.parse_args()
    device, dtype = args.device, getattr(torch, args.dtype)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = SHAPES["multi30k"]
    lengths = (x.src_len, x.tgt_len, x.tgt_len)
    batches = [
        tuple(torch.randint(3, x.vocab, (args.batch, n), generator=g).to(device) for n in lengths)
        for _ in range(args.steps)
    ]
    models = {"qkv": qkv_model(x).to(device), "marian": marian_model(x).to(device)}
    logits = {
        "qkv": lambda m: lambda s, t: m(s, t),
        "marian": lambda m: lambda s, t: m(input_ids=s, decoder_input_ids=t).logits,
    }
    out = {"lever": "compiled_step", "batch": args.batch, "dtype": args.dtype}
    for name, model in models.items():
        if device != "cuda":
            break
        run = contender(model, logits[name](model), args.steps, batches, dtype)
        try:
            out[f"{name}_eager_profile"] = kernel_share(run, args.steps)
        except Exception as err:  # the profiler's event fields move between torch versions
            out[f"{name}_eager_profile"] = f"{type(err).__name__}: {err}"
    for mode in args.modes:
        contenders = {}
        for name, model in models.items():
            compiled = torch.compile(model, mode=None if mode == "default" else mode)
            contenders[f"{name}_eager"] = contender(model, logits[name](model), args.steps, batches, dtype)
            fast = contender(model, logits[name](compiled), args.steps, batches, dtype)
            start = time.perf_counter()
            try:
                fast(), fast()  # compile (forward and backward), then one warm run
            except Exception as err:  # a mode that cannot compile this model is a finding, not a crash
                out[f"{name}_{mode}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                continue
            out[f"{name}_{mode}_compile_s"] = round(time.perf_counter() - start, 1)
            contenders[f"{name}_{mode}"] = fast
        rates = alternate(contenders, args.rounds)
        out[mode] = {k: round(v) for k, v in rates.items()}
        for name in models:
            if f"{name}_{mode}" in rates:
                out[mode][f"{name}_speedup"] = round(rates[f"{name}_{mode}"] / rates[f"{name}_eager"], 3)
        print(json.dumps(out), flush=True)
    print(json.dumps({**out, **environment()}), flush=True)


if __name__ == "__main__":
    main()
