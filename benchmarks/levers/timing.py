"""The timer the lever scripts share: mean milliseconds per call after one warm-up call."""

import time


def bench(f, n=20):
    f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1000
