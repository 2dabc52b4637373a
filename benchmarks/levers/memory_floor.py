"""The floor under batch-1 generation of a 124M GPT in fp32: every step multiplies one vector by all
of the model's matrices, so it can go no faster than this machine reads their bytes.

    python benchmarks/levers/memory_floor.py

Prints the read rate of a plain sum over 512 MB, and of matrix-vector products over distinct
matrices as large as the `gpt2` shape's (12 layers x 4 x (3,072 x 768), plus the 50,257 x 768
embedding: 607 MB, more than any cache), and the milliseconds per token that rate allows for the
497 MB of `gpt2` weights.
"""

import time

import torch

torch.set_num_threads(2)


def rate(fn, n_bytes: int, reps: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return n_bytes * reps / (time.perf_counter() - start)


big = torch.randn(128 * 1024 * 1024)
print(f"sum over 512 MB: {rate(big.sum, big.numel() * 4) / 1e9:.1f} GB/s")
del big
matrices = [torch.randn(3072, 768) for _ in range(48)] + [torch.randn(50257, 768)]
vector = torch.randn(768)
n_bytes = sum(m.numel() for m in matrices) * 4
sweep = rate(lambda: [m @ vector for m in matrices], n_bytes)
print(f"matrix-vector products over {n_bytes / 1e6:.0f} MB of distinct matrices: {sweep / 1e9:.1f} GB/s")
print(f"floor for the 497 MB of gpt2 weights at that rate: {497e6 / sweep * 1e3:.1f} ms per token")
