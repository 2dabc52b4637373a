"""Dropout cost on the CPU: F.dropout, its mask, and SDPA with and without dropout_p (1M-element tensors)."""

import torch
import torch.nn.functional as F
from timing import bench

x = torch.randn(64, 64, 256, requires_grad=True)
print("F.dropout fwd 1M", bench(lambda: F.dropout(x, 0.1, True)))
print("rand<p mask fwd 1M", bench(lambda: x * (torch.rand_like(x) >= 0.1) / 0.9))
print("bernoulli_ 1M", bench(lambda: torch.empty_like(x).bernoulli_(0.9)))
print("rand_like 1M", bench(lambda: torch.rand_like(x)))


def fb(p):
    y = F.dropout(x, p, True)
    y.sum().backward()


print("dropout fwd+bwd", bench(lambda: fb(0.1)), "p=0", bench(lambda: fb(0.0)))
q = torch.randn(64, 4, 64, 64, requires_grad=True)


def sd(p):
    o = F.scaled_dot_product_attention(q, q, q, dropout_p=p)
    o.sum().backward()


print("sdpa fwd+bwd p=0.1", bench(lambda: sd(0.1)), "p=0", bench(lambda: sd(0.0)))
print(torch.get_num_threads())
