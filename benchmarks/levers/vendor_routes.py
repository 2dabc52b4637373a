"""The routes `qkv.nn.linear` and `qkv.decoding.argmax` choose by processor, each against its
alternative on this machine, alternating in one process (session 35, measured on an Intel Xeon).

    python benchmarks/levers/vendor_routes.py [--model runs/multi30k_de_en/best] [--rounds 7]

1. Greedy decoding of 512 test2016 sentences (the trained model): float32 output scores, the
   8-bit integer screening (`argmax.integer_products`), and the screening with every product of
   several rows on oneDNN with packed weights (the AMD rule, `mkl_runs_generic_code`). Sentences/s
   and whether the translations are identical.
2. The small GPT's `generate` (4 x 128, 256 tokens after 16) and one cached step of a random 124M
   GPT: single rows through qkv's `matvec` for every weight (the AMD rule), only for weights under
   MIN_WEIGHT numbers (the Intel rule), or never (MKL). Tokens/s and ms per step.
3. The Multi30k training step (tokens/s) under the Intel rule (MKL), the Zen 4 rules and the Zen 5
   rules for oneDNN.
Whichever rule this processor takes by itself is one of the settings; the others are forced.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate  # noqa: E402
from gpt import pair  # noqa: E402
from onednn_linear import decode_step, generation_rate, translation_step  # noqa: E402
from test2016 import model_and_batches  # noqa: E402

import qkv.decoding.argmax as argmax  # noqa: E402
import qkv.decoding.greedy as greedy  # noqa: E402
import qkv.nn.linear as qlinear  # noqa: E402

REAL = {name: getattr(qlinear, name) for name in ("mkl_runs_generic_code", "full_width_avx512", "x86_with_both")}
REAL_INTEGER = argmax.integer_products


def under(setting: dict, run):
    """run() with the named functions of `qkv.nn.linear` (and "integer" for argmax) replaced."""

    def call():
        for name, value in setting.items():
            if name == "integer":
                argmax.integer_products = lambda v=value: v
            else:
                setattr(qlinear, name, lambda v=value: v)
        try:
            return run()
        finally:
            for name, value in REAL.items():
                setattr(qlinear, name, value)
            argmax.integer_products = REAL_INTEGER

    return call


def greedy_rates(model_dir: str, src: str, rounds: int) -> None:
    model, batches = model_and_batches(model_dir, src)
    n = sum(b.size(0) for b in batches)
    settings = {
        "float32 scores, MKL": {"integer": False, "mkl_runs_generic_code": False},
        "integer screening, MKL": {"integer": True, "mkl_runs_generic_code": False},
        "integer screening, packed oneDNN": {"integer": True, "mkl_runs_generic_code": True},
    }
    outputs = {}

    def decode(name):
        def run():
            start = time.perf_counter()
            with torch.inference_mode():
                outputs[name] = [greedy.greedy_decode(model, b, b.size(1) + 51).tolist() for b in batches]
            return n / (time.perf_counter() - start)

        return under(settings[name], run)

    rates = alternate({name: decode(name) for name in settings}, rounds)
    first = next(iter(settings))
    same = {name: outputs[name] == outputs[first] for name in settings}
    print(f"greedy, sentences/s: {_rounded(rates)}; translations as with {first!r}: {same}", flush=True)


def single_row_rates(rounds: int) -> None:
    settings = {
        "matvec for every weight": {"mkl_runs_generic_code": True, "full_width_avx512": False},
        "matvec under MIN_WEIGHT": {"mkl_runs_generic_code": False, "x86_with_both": True},
        "MKL": {"mkl_runs_generic_code": False, "x86_with_both": False},
    }
    _, small = pair(4, 4, 128, 65, 512)
    prompt = torch.randint(0, 65, (1, 16), generator=torch.Generator().manual_seed(1))[0].tolist()
    run = generation_rate(small, prompt, 256)
    print(f"small GPT generate, tokens/s: {_each(settings, run, 3 * rounds)}", flush=True)
    run = decode_step()
    print(f"124M cached step, ms: {_each(settings, run, rounds)}", flush=True)


def training_rates(rounds: int) -> None:
    settings = {
        "MKL (Intel rule)": {"mkl_runs_generic_code": False},
        "Zen 4 rules": {"mkl_runs_generic_code": True, "full_width_avx512": False},
        "Zen 5 rules": {"mkl_runs_generic_code": True, "full_width_avx512": True},
    }
    run = translation_step()
    print(f"Multi30k training step, tokens/s: {_each(settings, run, rounds)}")


def _rounded(rates: dict) -> dict:
    return {k: round(v, 2) for k, v in rates.items()}


def _each(settings: dict, run, rounds: int) -> dict:
    return _rounded(alternate({name: under(s, run) for name, s in settings.items()}, rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/multi30k_de_en/best")
    parser.add_argument("--src", default="../shared/data/multi30k/test2016.de")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"processor: {REAL['mkl_runs_generic_code']() and 'MKL runs generic code here' or 'Intel (MKL fast paths)'}")
    if (Path(args.model) / "model.safetensors").is_file():
        greedy_rates(args.model, args.src, args.rounds)
    else:
        print(f"greedy: skipped, no trained model at {args.model}")
    single_row_rates(args.rounds)
    training_rates(args.rounds)


if __name__ == "__main__":
    main()
