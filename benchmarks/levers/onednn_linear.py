"""oneDNN against `F.linear` (MKL) for qkv's linear layers (`qkv.nn.linear`), kernels first, then
whole workloads with `set_kernel("pytorch")` against `set_kernel("auto")`, alternating in one process.

    python benchmarks/levers/onednn_linear.py [--rounds 5]

1. A 2048 x 2048 fp32 product (GFLOP/s), and matrix-vector products over distinct matrices of the
   `gpt2` shape (12 layers x (2,304 + 768 + 3,072 + 3,072) x 768, plus the 50,257 x 768 embedding:
   more than any cache), as read rates (GB/s): batch-1 decoding's cost.
2. The Multi30k-shaped translation training step of `benchmarks/seq2seq_train.py` (tokens/s), the
   4 x 128 GPT's training step (batch 12 x 64, tokens/s), one cached decoding step of a random
   124M GPT after 16 tokens (ms), and the 4 x 128 GPT's uncached generation (256 tokens after 16,
   context 512: a new input shape every token), also with oneDNN forced at every size
   (`set_kernel("onednn")`), the case that kept smaller weights on `F.linear` outside training.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate, environment  # noqa: E402
from seq2seq_train import SHAPES, contender, qkv_model, qkv_step  # noqa: E402

from qkv.decoding.generate import generate  # noqa: E402
from qkv.models.gpt import GPT, PRESETS, GPTConfig  # noqa: E402
from qkv.nn.linear import set_kernel  # noqa: E402


def onednn(x, w):
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


def kernel_rates(reps: int = 10) -> None:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for name, product in (("torch.mm (MKL)", lambda: a @ b.t()), ("oneDNN", lambda: onednn(a, b))):
        product()
        start = time.perf_counter()
        for _ in range(reps):
            product()
        print(f"2048^3 product, {name}: {reps * 2 * 2048**3 / (time.perf_counter() - start) / 1e9:.0f} GFLOP/s")
    shapes = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12 + [(50257, 768)]
    weights = [torch.randn(shape) for shape in shapes]
    n_bytes = sum(w.numel() * 4 for w in weights)
    x = {768: torch.randn(1, 768), 3072: torch.randn(1, 3072)}
    with torch.inference_mode():
        for name, product in (("F.linear (MKL)", F.linear), ("oneDNN", onednn)):
            [product(x[w.size(1)], w) for w in weights]
            start = time.perf_counter()
            for _ in range(reps):
                [product(x[w.size(1)], w) for w in weights]
            rate = reps * n_bytes / (time.perf_counter() - start)
            print(f"matrix-vector products over {n_bytes / 1e6:.0f} MB, {name}: {rate / 1e9:.1f} GB/s")


def per_kernel(run, kernels=("pytorch", "auto")) -> dict:
    """Each kernel choice as a contender of `alternate` (the choice is put back after each call)."""

    def under(kernel):
        def call():
            previous = set_kernel(kernel)
            try:
                return run()
            finally:
                set_kernel(previous)

        return call

    return {kernel: under(kernel) for kernel in kernels}


def translation_step(steps: int = 3):
    x, b = SHAPES["multi30k"], 64
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = tuple(torch.randint(3, x.vocab, (b, n), generator=g) for n in (x.src_len, x.tgt_len, x.tgt_len))
    model = qkv_model(x)
    states_of, criterion = qkv_step(model)
    run = contender(model, states_of, steps, [batch] * steps, torch.float32, criterion)
    run()  # warm-up: Adam's state, the allocator
    return run


def gpt_train_step(steps: int = 10):
    torch.manual_seed(0)
    model = GPT(PRESETS["char-tiny"]).train()
    batch = torch.randint(0, 65, (12, 65), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            logits = model(batch[:, :-1]).logits
            F.cross_entropy(logits.reshape(-1, 65), batch[:, 1:].reshape(-1)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return steps * 12 * 64 / (time.perf_counter() - start)

    run()
    return run


def decode_step(steps: int = 30):
    torch.manual_seed(0)
    model = GPT(GPTConfig(dropout=0.0, attention_dropout=0.0)).eval()
    prompt = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(0))

    @torch.inference_mode()
    def run() -> float:
        cache = model.new_cache()
        model(prompt, cache)
        token = torch.tensor([[5]])
        start = time.perf_counter()
        for _ in range(steps):
            model(token, cache)
        return (time.perf_counter() - start) / steps * 1e3

    return run


def uncached_generation(new_tokens: int = 256):
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=65, block_size=512, d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0, attention_dropout=0.0
    )
    model = GPT(config).eval()
    prompt = torch.randint(0, 65, (16,), generator=torch.Generator().manual_seed(1)).tolist()

    return generation_rate(model, prompt, new_tokens, use_cache=False)


def generation_rate(model: GPT, prompt: list[int], new_tokens: int, use_cache: bool = True):
    """A contender for `alternate`: greedy generation of `new_tokens` after `prompt`, in tokens/s."""

    def run() -> float:
        start = time.perf_counter()
        list(generate(model, prompt, new_tokens, temperature=0.0, use_cache=use_cache))
        return new_tokens / (time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(environment())
    kernel_rates()
    for name, unit, make in (
        ("translation training step (Multi30k shape)", "tokens/s", translation_step),
        ("4 x 128 GPT training step", "tokens/s", gpt_train_step),
        ("124M GPT cached decoding step", "ms", decode_step),
    ):
        r = alternate(per_kernel(make()), args.rounds)
        gain = r["auto"] / r["pytorch"] if unit == "tokens/s" else r["pytorch"] / r["auto"]
        print(f"{name}: F.linear {r['pytorch']:.1f}, auto {r['auto']:.1f} {unit}: {gain:.3f}x")
    r = alternate(per_kernel(uncached_generation(), ("pytorch", "auto", "onednn")), args.rounds)
    print(
        f"4 x 128 GPT uncached generation: F.linear {r['pytorch']:.0f}, auto {r['auto']:.0f}, "
        f"oneDNN at every size {r['onednn']:.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
