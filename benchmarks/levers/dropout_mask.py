"""A cheaper dropout mask from 16-bit random integers against F.dropout, forward + backward."""

import torch
import torch.nn.functional as F
from timing import bench

x = torch.randn(64, 64, 256, requires_grad=True)
g = torch.randn(64, 64, 256)


class Drop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        bits = torch.randint(-(2**31), 2**31 - 1, ((x.numel() + 1) // 2,), dtype=torch.int32).view(torch.int16)[
            : x.numel()
        ]
        keep = (bits >= int(-32768 + round(p * 65536))).view(x.shape)
        ctx.save_for_backward(keep)
        ctx.scale = 1 / (1 - p)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def fb(f):
    y = f()
    y.backward(g)


print("F.dropout fwd+bwd", bench(lambda: fb(lambda: F.dropout(x, 0.1, True))))
print("Drop fwd+bwd", bench(lambda: fb(lambda: Drop.apply(x, 0.1))))
print("Drop fwd", bench(lambda: Drop.apply(x, 0.1)))
print("identity fwd+bwd", bench(lambda: fb(lambda: x * 1.0)))
print("randint32 n/2", bench(lambda: torch.randint(-(2**31), 2**31 - 1, (x.numel() // 2,), dtype=torch.int32)))
print("randint int16 n", bench(lambda: torch.randint(-(2**15), 2**15 - 1, (x.numel(),), dtype=torch.int16)))
y = Drop.apply(x, 0.1)
print("kept frac", (y != 0).float().mean().item(), "mean ratio", (y.sum() / x.sum()).item())
