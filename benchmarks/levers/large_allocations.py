"""What a fresh large tensor costs on the CPU: glibc serves allocations above its mmap threshold (at most
32 MB) with fresh pages from the kernel, and every first touch of a page faults. The training step's
vocabulary scores, 1,536 x 8,000 fp32 (49 MB), are such a tensor, made anew at every step.

    python benchmarks/levers/large_allocations.py             # glibc's defaults
    python benchmarks/levers/large_allocations.py --no-mmap   # mallopt: large blocks from the heap, kept

Prints medians (ms) of: the output layer's product into a new tensor and into one allocated once, and
a new (1,536, 8,000) tensor filled. Settings of the allocator hold for the whole process, hence one
process per setting.
"""

import argparse
import ctypes
import time

import torch

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameter numbers (malloc.h)


def median_ms(fn, n: int = 21) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[n // 2] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-mmap", action="store_true", help="mallopt(M_MMAP_MAX, 0) and a 1 GB trim threshold")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.no_mmap:
        libc = ctypes.CDLL("libc.so.6")
        assert libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**30) == 1
    h, w = torch.randn(1536, 256), torch.randn(8000, 256)  # decoder output, tied embedding
    out = torch.empty(1536, 8000)
    for _ in range(3):
        fresh = median_ms(lambda: h @ w.t())
        reused = median_ms(lambda: torch.mm(h, w.t(), out=out))
        filled = median_ms(lambda: torch.empty(1536, 8000).fill_(1.0))
        print(f"product, new output {fresh:.1f}; into the same output {reused:.1f}; new tensor filled {filled:.1f}")


if __name__ == "__main__":
    main()
