"""Training criteria, separate from the models (STYLE principle 9)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qkv.nn import native
from qkv.nn.linear import linear


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, epsilon: float, ignore_index: int
) -> tuple[Tensor, int]:
    """Summed loss and the number of target tokens it covers.

    logits: (B, T, V); target: (B, T) with `ignore_index` at padding. The smoothed target puts
    1 - epsilon on the true token and epsilon spread uniformly over all V tokens (Szegedy et al.,
    2016; the paper's epsilon_ls = 0.1, sec 5.4): it "hurts perplexity ... but improves BLEU".
    The value and gradient are those of `F.cross_entropy(..., label_smoothing=epsilon, reduction="sum")`
    (tests/test_training_pieces.py), in about half its time (docs/PERFORMANCE.md, levers); on the CPU in
    float32 through qkv's compiled kernel (`smoothed_loss.cpp`), one pass over the scores each way.
    """
    flat = logits.reshape(-1, logits.size(-1))  # (N, V)
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))  # bf16 scores (autocast) are summed in fp32
    target = target.reshape(-1)
    compiled = (
        native.applies(flat) and target.dtype == torch.long and native.kernel("smoothed_loss_forward") is not None
    )
    criterion = _CompiledSmoothedCrossEntropy if compiled else _SmoothedCrossEntropy
    loss = criterion.apply(flat.contiguous() if compiled else flat, target, float(epsilon), ignore_index)
    return loss, int((target != ignore_index).sum())


class _CompiledSmoothedCrossEntropy(torch.autograd.Function):
    """The criterion below as two compiled passes (`qkv.nn.native`): the forward keeps the scores and
    each row's log-sum-exp, and the backward writes softmax - q from them."""

    @staticmethod
    def forward(ctx, z: Tensor, target: Tensor, eps: float, ignore: int) -> Tensor:
        # z: (N, V) float32 scores; target: (N,) ids
        total, lse = native.kernel("smoothed_loss_forward")(z, target, eps, ignore)
        ctx.save_for_backward(z, target, lse)
        ctx.eps, ctx.ignore = eps, ignore
        return total.to(z.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        z, target, lse = ctx.saved_tensors
        dz = native.kernel("smoothed_loss_backward")(z, target, lse, ctx.eps, ctx.ignore, float(grad), False)
        return dz, None, None, None


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Label-smoothed cross-entropy summed over the rows whose target is not `ignore`, with its
    gradient written out: with q the smoothed target distribution, d loss / d logits = softmax - q.

    `F.cross_entropy` reaches the same numbers through log_softmax, two losses (the true token's
    and the uniform one) and their separate backward passes, each a pass over the (N, V) scores
    plus a fresh (N, V) tensor. Here the forward makes the softmax once and keeps it; the backward
    turns it into the gradient in place. At the Multi30k shape (1,536 x 8,000) that halves the
    criterion's time, about a tenth of the whole training step."""

    @staticmethod
    def forward(ctx, z: Tensor, target: Tensor, eps: float, ignore: int) -> Tensor:
        # z: (N, V) scores; target: (N,) ids
        m = z.amax(-1, keepdim=True)  # (N, 1): exp never overflows
        p = torch.sub(z, m).exp_()  # (N, V)
        total = p.sum(-1, keepdim=True)  # (N, 1)
        p.div_(total)  # softmax(z), kept for the backward
        lse = (m + total.log()).squeeze(1)  # (N,) log sum_v exp z_v
        keep = target != ignore  # (N,)
        t = target.masked_fill(~keep, 0)  # an ignored row reads column 0 and is then weighted 0
        true = z.gather(1, t[:, None]).squeeze(1)  # (N,) the true token's score
        # -(1 - eps) log p_t - (eps / V) sum_v log p_v, with log p_v = z_v - lse
        rows = lse - (1.0 - eps) * true - eps * z.mean(-1)
        ctx.save_for_backward(p, t, keep)
        ctx.eps, ctx.used = eps, False
        return (rows * keep).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        if ctx.used:  # the gradient was built in the saved softmax's memory: a second pass would read it
            raise RuntimeError("label_smoothed_cross_entropy: backward through the same loss twice is not supported")
        ctx.used = True
        p, t, keep = ctx.saved_tensors
        w = (grad * keep).to(p.dtype)[:, None]  # (N, 1): the incoming gradient, 0 on ignored rows
        p.sub_(ctx.eps / p.size(1)).mul_(w)  # (softmax - eps / V) * w ...
        p.scatter_add_(1, t[:, None], -(1.0 - ctx.eps) * w)  # ... - (1 - eps) * w at the true token
        return p, None, None, None


def output_smoothed_cross_entropy(
    x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, epsilon: float, ignore_index: int
) -> tuple[Tensor, int]:
    """`label_smoothed_cross_entropy` of the scores x W^T + b (the model's output layer, sec 3.4), without
    keeping those scores: summed loss and the number of target tokens it covers.

    x: (B, T, D) the decoder's output; weight: (V, D); bias: (V,) or None; target: (B, T). For float32
    CPU tensors the scores are made a block of rows at a time in one reused buffer, and each block's
    gradient is taken at once (`_ChunkedOutputLoss`); elsewhere (GPU, autocast, sharded weights) this is
    `linear` followed by `label_smoothed_cross_entropy`, the same numbers up to rounding.
    """
    flat, target = x.reshape(-1, x.size(-1)), target.reshape(-1)  # (N, D), (N,)
    params = [p for p in (weight, bias) if p is not None]  # plain: not FSDP's sharded DTensors
    chunked = (
        native.applies(flat)
        and all(native.plain(p) and p.device.type == "cpu" and p.dtype == torch.float32 for p in params)
        and target.dtype == torch.long
        and native.kernel("smoothed_loss_forward") is not None
    )
    if not chunked:
        return label_smoothed_cross_entropy(linear(x, weight, bias), target, epsilon, ignore_index)
    loss = _ChunkedOutputLoss.apply(flat.contiguous(), weight, bias, target, float(epsilon), ignore_index)
    return loss, int((target != ignore_index).sum())


CHUNK_BYTES = 24 * 2**20  # scores per block: under glibc's 32 MB mmap limit, so the buffer is reused memory


class _ChunkedOutputLoss(torch.autograd.Function):
    """The output layer and the label-smoothed loss, a block of rows at a time.

    Why: at the Multi30k shape the scores are 1,536 x 8,000 floats (49 MB), and so is their gradient.
    Each would be a fresh allocation every step, above glibc's mmap threshold, so every page of it
    faults on first touch (12-15 ms each; `benchmarks/levers/large_allocations.py`), and the weight's
    gradient would come out transposed and be copied once more. Here one block of scores at a time is
    made in a buffer of at most CHUNK_BYTES, its loss taken, and (when gradients are wanted) the
    gradient written over it and multiplied out at once into dL/dx, dL/dW and dL/db, which the backward
    pass only scales by the incoming gradient. The cost: the forward does the backward's products, so
    a loss computed with gradients on and never backpropagated costs twice its share."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, eps: float, ignore: int):
        # x: (N, D); weight: (V, D); bias: (V,) or None; target: (N,)
        n, v = x.size(0), weight.size(0)
        want_x, want_w, want_b = ctx.needs_input_grad[:3]
        rows = max(1, min(n, CHUNK_BYTES // (4 * v)))
        scores = x.new_empty(rows, v)  # (rows, V), reused block by block
        gx = torch.empty_like(x) if want_x else None  # (N, D)
        gw = (torch.empty_like if n else torch.zeros_like)(weight) if want_w else None  # (V, D), set by block 0
        gb = torch.zeros_like(bias) if want_b else None  # (V,)
        forward, both = native.kernel("smoothed_loss_forward"), native.kernel("smoothed_loss_with_gradient")
        total = torch.zeros((), dtype=torch.float64)
        for start in range(0, n, rows):
            xs, ts = x[start : start + rows], target[start : start + rows]  # (r, D), (r,)
            z = scores[: xs.size(0)]
            if bias is None:
                torch.mm(xs, weight.t(), out=z)
            else:
                torch.addmm(bias, xs, weight.t(), out=z)
            if want_x or want_w or want_b:
                total += both(z, ts, eps, ignore)  # z now holds the block's gradient, softmax - q: (r, V)
                g = z
                if want_x:
                    torch.mm(g, weight, out=gx[start : start + rows])  # dL/dx = g W
                if want_w:  # dL/dW += g^T x, already in W's (V, D) layout
                    torch.mm(g.t(), xs, out=gw) if start == 0 else gw.addmm_(g.t(), xs)
                if want_b:
                    gb += g.sum(0)
            else:
                total += forward(z, ts, eps, ignore)[0]
        ctx.save_for_backward(gx, gw, gb)
        return total.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        gx, gw, gb = ctx.saved_tensors
        scale = lambda g: None if g is None else g * grad  # noqa: E731  (new tensors: a second backward is right too)
        return scale(gx), scale(gw), scale(gb), None, None, None
