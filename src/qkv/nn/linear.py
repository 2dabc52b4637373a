"""Every linear map of the models, y = x W^T + b, goes through `linear` (and `Linear`, an `nn.Linear`
that calls it): `F.linear`, or oneDNN's kernel where that is known to be the faster of the two.

Why a second kernel: PyTorch's x86 CPU build multiplies fp32 matrices with MKL, and MKL runs its fast
code paths only on Intel processors. On others it takes a generic AVX2 path: on session 23's 2-core AMD
EPYC (Zen 5, AVX-512) a 2048 x 2048 product runs at 196 GFLOP/s through `torch.mm` and 440-450 through
oneDNN, the other matrix library PyTorch ships, which picks its code by instruction set alone; a
matrix-vector product (batch-1 decoding) reads weights at 17 GB/s through MKL and 31-40 through oneDNN
(`python benchmarks/levers/onednn_linear.py`). On Intel processors MKL is kept: on session 35's Xeon
(AVX-512, AMX), alternating in one process, the Multi30k training step ran 0.92x with every product
on oneDNN, 0.97x under the Zen 4 rules below and 0.93x under the Zen 5 ones; the packed decoding
products gave greedy 0.88-0.97x, beam 4 1.00-1.03x (`python benchmarks/levers/vendor_routes.py`).

oneDNN pays about 12 us more per call, and 0.3-0.5 ms the first time it sees an input shape, so it
takes only weights of 2^19 numbers and more (where reading the weight is the cost), and, in training,
products of at least 2^21 multiply-adds (rows x in x out): a 4 x 128 GPT's decoding stays on
`F.linear`, its training step and every layer of a 124M model's decoding step do not. That second rule
holds only where oneDNN also computes faster, on processors with full-width AVX-512 units (AMD's Zen 5
on): session 24's Zen 4, whose AVX-512 runs on 256-bit units, trained the 4 x 128 GPT at 18,474 tokens/s
with its products left on MKL against 16,358 on oneDNN (`full_width_avx512`). Its fp32
results differ from MKL's in rounding only (summation order). Autocast, other dtypes, tensor
subclasses (FSDP's DTensor) and `torch.compile` (whose own CPU lowering already uses oneDNN) always
get `F.linear`.

On those half-width processors a training product of that size goes to oneDNN after all once its shape
(rows, in, out) has come before (`recurring`), for its forward and dL/dx products; dL/dW stays on MKL
for weights under 2^18 numbers (`weight_gradient_on_mkl`). oneDNN builds a kernel per input shape,
which only a recurring shape repays: sent there the first time they were met, 30 real token-batched
Multi30k batches of new shapes ran 2.2% slower. Session 31's Zen 4, alternating in one process (one-off
scripts, then `python benchmarks/levers/recurring_shapes.py`), with every dL/dW on MKL: the Multi30k
training step 1.010x, 1.043x and 1.005x against MKL alone, the 4 x 128 GPT's 1.021x and 1.000x, those 30
real batches within 2% either way; the FFN's dL/dW then moved to oneDNN, 1.009-1.014x more. At most
MAX_TRAINING_SHAPES shapes a process are admitted, so that their kernels stay in oneDNN's cache (1,024
kernels, shared with decoding's); a token-batched run keeps MKL for a batch until it comes round again.

Under "auto" on the same processors, a product of a single row without gradients (batch-1 decoding), of
any size, goes instead to qkv's own compiled loop (`matvec`, `qkv.nn.native`), which reads a weight faster than
either library (36-38 GB/s against oneDNN's 21-24 on session 24's AMD EPYC) and costs less per call;
`set_kernel("onednn")` keeps oneDNN there, for comparison. On Intel processors only small weights
go there (`takes_matvec`).

Also under "auto" on those processors, inside a `packed_weights()` block (`qkv.nn.weight_copies`; greedy
decoding, beam search and `translate_lines` open one), a product of several rows without gradients whose
weight has at least 2^17 numbers runs on oneDNN with the weight packed once into oneDNN's own layout.
Unpacked, oneDNN rearranges the weight on every call, which at 64 rows is a large share of the product:
the Multi30k model's (8,000 x 256) output layer took 1.47-1.54 ms a call packed against 1.96 unpacked
and 2.46 through MKL; its (256 -> 1,024) and (1,024 -> 256) layers 181 and 179 us against MKL's 224 and
237 (one-off timings, session 28's Zen 4). Smaller weights stay on MKL: a 256 x 256 one was no faster
packed (59 against 56 us). The packed copies live only as long as the block: a copy kept across calls
could not tell that its weight had changed, since PyTorch's fused optimisers and writes through `.data`
update weights in place without moving their version counter.

Batch-1 greedy generation's speculative draft (`qkv.decoding.speculative`) runs its single-row
products inside a `draft_products()` block, on copies of the weights rounded to 8-bit integers row by
row (`draft_rows`, `draft_matvec`): an approximation that the float32 check corrects. That check
multiplies 2 to 16 rows by each weight; on Intel processors such products of large weights go to qkv's
`few_rows` loop (`takes_few_rows`), which reads each weight once for all the rows, where MKL takes
about 1.9x a single row's time for 5 rows.
"""

from __future__ import annotations

import platform
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from qkv.nn import linear_relu, native
from qkv.nn.weight_copies import block_copies, block_copy, drafting

Kernel = Literal["auto", "pytorch", "onednn"]
# oneDNN's per-call overhead outweighs its faster arithmetic below 2^21 multiply-adds, unless the weight
# alone (2 MB or more) is too large to stay in a core's cache between calls, as in decoding: then
# reading it is the cost, and oneDNN reads faster (module docstring).
MIN_MACS = 2**21
MIN_WEIGHT = 2**19
MIN_DRAFT = 2**16  # a speculative draft's products on 8-bit weights from this size on (GPT-2's are 2^19+)
MAX_FEW_ROWS = 16  # `few_rows` serves 2 to this many rows
MIN_PACKED = 2**17  # inference products of several rows: oneDNN on a packed weight from this size on
# Training shapes (rows, in, out) seen so far, for `recurring`: 128 shapes are 256 oneDNN kernels
# (forward and dL/dx), a quarter of its cache.
MAX_TRAINING_SHAPES = 128
MIN_WEIGHT_GRAD = 2**18  # there, dL/dW on oneDNN from this size on (`weight_gradient_on_mkl`)
_training_shapes: set[tuple[int, int, int]] = set()
_kernel: Kernel = "auto"
_ONEDNN_BUILT = torch.backends.mkldnn.is_available()


def set_kernel(kernel: Kernel) -> Kernel:
    """Choose the kernel for every later call ("auto": by processor and size; "pytorch": always
    `F.linear`, and `F.gelu` for `qkv.nn.gelu`; "onednn": oneDNN wherever it applies, at any size).
    Returns the previous choice, so that benchmarks and tests can compare in one process and put the
    setting back."""
    global _kernel
    if kernel not in ("auto", "pytorch", "onednn"):
        raise ValueError(f"unknown linear kernel {kernel!r} (auto, pytorch or onednn)")
    previous, _kernel = _kernel, kernel
    return previous


def current_kernel() -> Kernel:
    return _kernel


@cache
def x86_with_both() -> bool:
    """True on an x86 processor of any vendor with PyTorch's MKL and oneDNN built in and a cpuinfo to read."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if not (torch.backends.mkl.is_available() and torch.backends.mkldnn.is_available()):
        return False
    return "vendor_id" in native.cpuinfo()  # empty where there is none (not Linux)


@cache
def mkl_runs_generic_code() -> bool:
    """True on an x86 processor that is not Intel's, with PyTorch's MKL and oneDNN both built in."""
    return x86_with_both() and "GenuineIntel" not in native.cpuinfo()


@cache
def full_width_avx512() -> bool:
    """True on AMD processors of family 26 (Zen 5) and later, whose vector units are 512 bits wide.
    Zen 4 (family 25) runs AVX-512 through 256-bit units, so oneDNN's AVX-512 products there are no
    faster than MKL's generic AVX2 ones: session 24's Zen 4 EPYC multiplied 2048^3 at 212 GFLOP/s
    through oneDNN and 145 through MKL, against 447 and 197 on session 23's Zen 5, and the 4 x 128 GPT's
    training step ran 6% slower under the rule without this test than on MKL (16,252 against 17,230
    tokens/s; `python benchmarks/levers/onednn_linear.py` gives that step for each kernel). There a
    training product goes to oneDNN only through `recurring`, with dL/dW left to MKL."""
    info = native.cpuinfo()
    for line in info.splitlines():
        if line.startswith("cpu family"):
            return "AuthenticAMD" in info and int(line.split(":")[1]) >= 26
    return False


def kernels_apply(x: Tensor, weight: Tensor) -> bool:
    """Whether oneDNN's kernel (or qkv's matvec) can stand in for `F.linear` on these tensors at all."""
    return (
        _ONEDNN_BUILT
        and x.is_cpu  # not x.device.type: 0.07 against 0.33 us, 17 times a small GPT's decoding step
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and native.plain(weight)
        and native.plain(x)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def chooses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether `linear(x, weight)` will run on oneDNN under the current `set_kernel` choice. The
    cheapest tests come first: a 4 x 128 GPT's decoding step asks this 17 times a token."""
    if _kernel == "pytorch":
        return False
    if _kernel == "auto":
        if not mkl_runs_generic_code():
            return False
        if weight.numel() < MIN_WEIGHT:
            # Smaller weights only in training: oneDNN builds a kernel for each new input shape
            # (0.3-0.5 ms), which a training run's recurring batch shapes repay and one-off shapes do
            # not: uncached generation, whose input grows by a row each token, ran 1.3-1.7x slower.
            if not torch.is_grad_enabled() or x.numel() * weight.size(0) < MIN_MACS:  # rows * in * out
                return False
            if not full_width_avx512():  # half-width: only a shape whose oneDNN kernel is kept (`recurring`)
                return kernels_apply(x, weight) and recurring(x, weight)  # (GPU tensors are never noted)
    return kernels_apply(x, weight)


def recurring(x: Tensor, weight: Tensor) -> bool:
    """Whether a training product of this shape (rows, in, out) came before in this process, among its
    first MAX_TRAINING_SHAPES shapes; a new shape is noted for next time. oneDNN builds a kernel per
    input shape and caches it: a fixed batch shape repays it from the second step on, a token-batched
    run when the batch comes round again, and a one-off shape never (module docstring)."""
    key = (x.numel() // x.size(-1), x.size(-1), weight.size(0))
    if key in _training_shapes:
        return True
    if len(_training_shapes) < MAX_TRAINING_SHAPES:
        _training_shapes.add(key)
    return False


def weight_gradient_on_mkl(weight: Tensor) -> bool:
    """Whether a oneDNN training product leaves dL/dW to MKL: under "auto" on half-width AVX-512, for
    weights under MIN_WEIGHT_GRAD numbers. Session 31's Zen 4, the Multi30k training step alternating in
    one process: every dL/dW of the products `recurring` admits on oneDNN 0.970x against 1.027x with all
    on MKL (a one-off prototype); only the FFN's (256 x 1,024, 2^18 numbers) on oneDNN 1.010x, 1.014x and
    1.009x against all on MKL (one-off scripts, 9-13 rounds)."""
    return _kernel == "auto" and weight.numel() < MIN_WEIGHT_GRAD and not full_width_avx512()


def takes_matvec(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether `linear` sends this product to qkv's compiled single-row loop (if it is built): under
    "auto", for one input row with no gradient to track. Where MKL runs generic code, at any size (it
    has no per-shape set-up cost, and beat `F.linear` even at 128 x 384: 5.8 against 11.6 us). On Intel
    processors only under MIN_WEIGHT numbers, weights that stay in cache: MKL reads a streamed one at
    the memory's rate there (session 35's Xeon: a 124M GPT's step 0.88x on this loop, the small GPT's
    `generate` 1.075x; `python benchmarks/levers/vendor_routes.py`)."""
    return (
        _kernel == "auto"
        and x.numel() == x.size(-1)  # first: false at once for every batch of a training step
        and (mkl_runs_generic_code() or (weight.numel() < MIN_WEIGHT and x86_with_both()))
        and not (torch.is_grad_enabled() and _tracked(x, weight, bias))
        and kernels_apply(x, weight)
    )


def takes_packed(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether `linear` sends this product to oneDNN with the weight packed (module docstring): inside a
    `packed_weights()` block, under "auto", where MKL runs generic code, for a weight of MIN_PACKED
    numbers or more and no gradient to track. Single rows go to `matvec` first when it is built."""
    return (
        block_copies() is not None
        and _kernel == "auto"
        and weight.numel() >= MIN_PACKED
        and mkl_runs_generic_code()
        and not (torch.is_grad_enabled() and _tracked(x, weight, bias))
        and kernels_apply(x, weight)
    )


def takes_few_rows(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether `linear` sends this product to qkv's loop for a few rows (`few_rows`): under "auto", on
    Intel processors (MKL's own), for 2 to MAX_FEW_ROWS input rows without gradients against a weight of
    MIN_WEIGHT numbers or more, as a speculative draft's check has (`qkv.decoding.speculative`). MKL
    takes about 1.9x a single row's time for 5 rows of GPT-2's (3,072 x 768) weight; this loop 1.5x
    (session 39's Xeon, one-off timings). Elsewhere oneDNN's packed route serves small batches."""
    rows = x.numel() // max(x.size(-1), 1)
    return (
        _kernel == "auto"
        and 2 <= rows <= MAX_FEW_ROWS
        and weight.numel() >= MIN_WEIGHT
        and x86_with_both()
        and not mkl_runs_generic_code()
        and not (torch.is_grad_enabled() and _tracked(x, weight, bias))
        and kernels_apply(x, weight)
    )


def draft_rows(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """Inside `draft_products()`, for a single input row without gradients: the weight rounded to 8-bit
    integers row by row, (p (out, in) int8, scale (out,)) with weight ~ scale p (made once per block,
    `quantize_rows`); None elsewhere, or when the kernels are not built."""
    if not (drafting() and x.numel() == x.size(-1) and weight.numel() >= MIN_DRAFT):
        return None
    if (torch.is_grad_enabled() and _tracked(x, weight, bias)) or not kernels_apply(x, weight):
        return None
    make = native.kernel("quantize_rows")
    if make is None or native.kernel("draft_matvec") is None:
        return None
    return block_copy(weight, "int8 rows", lambda w: tuple(make(w)), weight.numel() + 4 * weight.size(0))


def packed_weight(weight: Tensor, rows: int) -> Tensor | None:
    """`weight` in oneDNN's layout for products of about `rows` rows (any row count works): a
    `block_copy`, so None outside a `packed_weights()` block."""
    return block_copy(
        weight, "onednn", lambda w: torch.ops.mkldnn._reorder_linear_weight(w, max(rows, 1)), weight.numel() * 4
    )


def _tracked(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    return x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)


def _onednn(x: Tensor, weight: Tensor, bias: Tensor | None, relu: bool = False) -> Tensor:
    """x: (..., in) @ weight (out, in)^T + bias (out,) -> (..., out), through oneDNN; with relu, ReLU
    applied as the product is written. `weight` may also be a `packed_weight` copy."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """oneDNN for the forward product and dL/dx, and for dL/dW unless `mkl_weight_grad`; with `relu`, the
    product's ReLU too (the gradient masked where the output is zero)."""

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Tensor, bias: Tensor | None, mkl_weight_grad: bool = False, relu: bool = False
    ) -> Tensor:
        y = _onednn(x, weight, bias, relu)
        # with relu, the output is kept to mask the gradient (what F.relu's backward reads): the
        # pre-activation never exists as a tensor of its own
        ctx.save_for_backward(x, weight, y if relu else None)
        ctx.has_bias = bias is not None
        ctx.mkl_weight_grad = mkl_weight_grad
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, y = ctx.saved_tensors
        if y is not None:  # ReLU's gradient: zero where the output is (F.relu's backward, on its output)
            grad = torch.ops.aten.threshold_backward(grad, y, 0)
        # contiguous(): the gradient of a plain `y.sum()` is one number broadcast with stride 0, which
        # oneDNN multiplies 200x slower than a real matrix (750 against 3.5 ms at 768 x 128 x 384).
        g = grad.contiguous().reshape(-1, grad.size(-1))  # (N, out), N = all leading dimensions
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(g, weight.t(), None).view(x.shape)  # dL/dx = g W: (N, in)
        if ctx.needs_input_grad[1]:
            # dL/dW = g^T x: (out, in). oneDNN copies its transposed "weight" operand (N x out or N x in)
            # into place first, and the result's layout must end as W's, so the order that moves less
            # wins: (x^T g)^T when out >= in, g^T x when out < in (Multi30k shape, N = 1,536, a one-off
            # timing: 1024 x 256 2.7 against 3.6 ms, 256 x 1024 2.3 against 3.5; MKL 4.3 and 4.5).
            x2 = x.reshape(-1, x.size(-1))
            if ctx.mkl_weight_grad:
                grad_w = g.t().mm(x2)  # as F.linear's backward computes it
            elif weight.size(0) < weight.size(1):
                grad_w = _onednn(g.t(), x2.t(), None)
            else:
                grad_w = _onednn(x2.t(), g.t(), None).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b, None, None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """y = x W^T + b, or ReLU(x W^T + b) with relu=True (the paper's FFN, eq. 2), the ReLU applied as
    the product is written (oneDNN) or with the bias (`qkv.nn.linear_relu`): a separate `relu` pass took
    32-36 ms of a 1.1 s greedy decoding in session 28. x: (..., in); weight: (out, in); bias: (out,)."""
    if (draft := draft_rows(x, weight, bias)) is not None:
        y = native.kernel("draft_matvec")(x, *draft, bias)  # a speculative draft: 8-bit weights
    elif takes_matvec(x, weight, bias) and (single_row := native.kernel("matvec")) is not None:
        y = single_row(x, weight, bias)  # batch-1 decoding: reading the weight is the whole cost
    elif takes_packed(x, weight, bias) and (packed := packed_weight(weight, x.numel() // x.size(-1))) is not None:
        # decoding a batch: the weight rearranged once per call, not at every step
        return _onednn(x, packed, bias, relu)
    elif takes_few_rows(x, weight, bias) and (few := native.kernel("few_rows")) is not None:
        y = few(x.reshape(-1, x.size(-1)), weight, bias).view(*x.shape[:-1], weight.size(0))
    elif not chooses_onednn(x, weight):
        if relu and linear_relu.applies(x, weight, bias):  # the bias and the ReLU in one pass
            return linear_relu.linear_relu(x, weight, bias)
        y = F.linear(x, weight, bias)
    elif torch.is_grad_enabled() and _tracked(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias, weight_gradient_on_mkl(weight), relu)
    else:
        y = _onednn(x, weight, bias)
    return F.relu(y) if relu else y


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state-dict names) computed by `linear`."""

    def forward(self, x: Tensor, relu: bool = False, add_bias: bool = True) -> Tensor:
        # add_bias=False: x W^T alone, the caller adds the bias in its next pass (the block's dropout_norm)
        return linear(x, self.weight, self.bias if add_bias else None, relu)
