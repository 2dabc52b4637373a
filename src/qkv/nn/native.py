"""qkv's compiled CPU kernels, built for the processor they run on: batch-1 decoding's single-row
product y = W x + b (`matvec.cpp`), GPT-2's GELU with its gradient (`gelu.cpp`), dropout (`dropout.cpp`),
attention over short sequences (`attention.cpp`) and the label-smoothed loss (`smoothed_loss.cpp`),
bound to Python by `native.cpp`.

`qkv.nn.linear` sends every no-gradient product of one input row to `matvec`, at any size, on x86
processors that are not Intel's (where it would otherwise go to oneDNN or MKL): on session 24's AMD EPYC
it read a 124M GPT's 494 MB of matrices at 36-38 GB/s against oneDNN's 21-24 and MKL's 11-12, and a
decoding step took 1.4-1.6x less time than on oneDNN (docs/PERFORMANCE.md, levers table). On Intel
processors, whose MKL reads a streamed weight as fast as the memory allows, only weights small enough
to stay in cache go there (`linear.takes_matvec`).
`qkv.nn.gelu` computes GPT-2's activation with `gelu_tanh` on every CPU (about 3x faster than
PyTorch's kernel, forward and backward); `qkv.nn.dropout` draws float32 CPU dropout masks with `dropout`
(about 40x faster than `bernoulli_`); `qkv.nn.short_attention` runs attention over up to 96 keys (256
under a causal mask), and a single query over any number, with `attention_forward` and
`attention_backward` (about 2.3x SDPA at translation's lengths, 1.5-3x for a decoding step's single query);
`qkv.train.losses` computes the label-smoothed loss with `smoothed_loss_forward` and `_backward`. The
extension is compiled once per processor, source and PyTorch version (about a minute, with the C++
compiler PyTorch's `cpp_extension` finds, and ninja), cached under ~/.cache/qkv (or $QKV_CACHE_DIR), and
loaded directly from there afterwards. `make setup` builds it; if the build fails, qkv warns once and
keeps PyTorch's own kernels (oneDNN, `F.gelu`, `F.dropout`, SDPA, its loss operations).

    python -c "from qkv.nn import native; native.main()"    # build now, or say why it cannot be
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

_KERNELS = (
    "native.cpp",
    "matvec.cpp",
    "gelu.cpp",
    "dropout.cpp",
    "attention.cpp",
    "smoothed_loss.cpp",
    "screened_argmax.cpp",
    "integer_scores.cpp",
    "draft_matvec.cpp",
    "few_rows.cpp",
    "layer_norm.cpp",
    "bias_relu.cpp",
    "dropout_layer_norm.cpp",
)
SOURCES = [Path(__file__).with_name(f) for f in _KERNELS]
# included by the sources: part of the build name too
HEADERS = [Path(__file__).with_name(h) for h in ("exp_approx.h", "dot.h", "dropout_mask.h", "vec.h", "int_dot.h")]
# Native code is safe to cache: the build is keyed by processor (build_name). -fopenmp is what makes
# at::parallel_for split the work across PyTorch's threads; without it every loop runs on one thread.
FLAGS = ["-O3", "-march=native", "-fopenmp"]
# GCC's tuning for Intel's AVX-512 server processors keeps its vector loops 256 bits wide (to spare the
# clock); session 35's Xeon (AVX-512, AMX) ran the Multi30k training step 1.017x and 1.021x, the 4 x 128
# GPT's 1.020x and 1.031x, greedy decoding 1.010x faster with 512-bit loops (the two builds alternating
# in one process). Not measured on AMD processors, which keep GCC's choice.
WIDE = ["-mprefer-vector-width=512"]

_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}  # "module" -> the loaded extension, or None once a build failed


def cache_dir() -> Path:
    root = os.environ.get("QKV_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qkv"
    return Path(root)


@cache
def cpuinfo() -> str:
    """/proc/cpuinfo's text, read once; empty off Linux. The build name and the kernel choices
    (`qkv.nn.linear`, `qkv.decoding.argmax`) read the vendor, family and flags from it."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _processor() -> str:
    """What the compiled code depends on: the vendor, model and instruction-set flags of this processor."""
    info = cpuinfo()
    if not info:
        return platform.processor() + platform.machine()
    first = info.split("\n\n", 1)[0]  # the first processor's block
    keep = ("vendor_id", "model name", "flags")
    return "\n".join(line for line in first.splitlines() if line.split(":")[0].strip() in keep)


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first processor in cpuinfo; empty where there is none."""
    first = cpuinfo().split("\n\n", 1)[0]
    line = next((line for line in first.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def flags() -> list[str]:
    """The compiler flags for this processor: FLAGS, and WIDE on an Intel one with AVX-512."""
    intel_avx512 = "GenuineIntel" in cpuinfo() and "avx512f" in cpu_flags()
    return FLAGS + WIDE if intel_avx512 else FLAGS


def build_name() -> str:
    """A module name that changes with anything the binary depends on, so a stale build is never loaded."""
    key = hashlib.sha256()
    for part in (
        *(source.read_bytes() for source in SOURCES + HEADERS),
        " ".join(flags()).encode(),
        torch.__version__.encode(),
        sys.version.encode(),
        _processor().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return "qkv_native_" + key.hexdigest()[:16]


STALE_LOCK_S = 600  # a build takes about a minute; a lock this old belongs to a process that was killed


def _clear_stale_lock(lock: Path) -> None:
    """PyTorch's builder waits, without end, while another process holds the build directory's lock
    file; a process killed mid-build (kill -9) leaves that file behind, so an old one is removed."""
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()
            print(f"qkv: removed {lock}, left by a build that did not finish", file=sys.stderr)
    except FileNotFoundError:
        pass


def _build() -> ModuleType:
    name = build_name()
    directory = cache_dir() / name
    library = directory / f"{name}.so"
    if not library.exists():
        print(
            f"qkv: compiling qkv's CPU kernels for this processor (once, about a minute) into {directory}",
            file=sys.stderr,
            flush=True,
        )
        directory.mkdir(parents=True, exist_ok=True)
        _clear_stale_lock(directory / "lock")
        # ninja may be installed beside this interpreter (pip's `ninja`) without that directory on PATH.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        from torch.utils.cpp_extension import load  # imported here: it takes about 2 s

        return load(
            name,
            [str(source) for source in SOURCES],
            extra_cflags=flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
        )
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module() -> ModuleType | None:
    """The compiled extension (the kernels `kernel` names, and `uses_openmp`), building it on
    first call; None if it cannot be built, after one warning that says why."""
    if "module" in _state:
        return _state["module"]
    with _lock:
        if "module" not in _state:
            try:
                _state["module"] = _build()
            except Exception as error:  # no compiler, no ninja, a compile error: PyTorch's kernels stay in use
                warnings.warn(
                    f"qkv: the CPU kernels could not be built ({str(error).strip()[:300]}); "
                    "using PyTorch's (oneDNN, F.gelu, F.dropout, SDPA, loss operations) instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _state["module"] = None
    return _state["module"]


def kernel(name: str) -> Callable[..., Tensor] | None:
    """The compiled function `name` ("matvec", "gelu_tanh", "gelu_tanh_backward", "dropout",
    "attention_forward", "attention_backward", "smoothed_loss_forward", "smoothed_loss_backward"), or None
    where the extension cannot be built.
    matvec(x, weight, bias): x (..., in) holding a single row, weight (out, in), bias (out,) or None ->
    (..., out). gelu_tanh(x), gelu_tanh_backward(grad, x), dropout(x, p, seed): float32, any shape.
    attention_*: see `qkv.nn.short_attention`; smoothed_loss_*: `qkv.train.losses`; bias_relu_,
    relu_bias_backward: `qkv.nn.linear_relu`; dropout_layer_norm_*: `qkv.nn.dropout_norm`; quantize_rows,
    quantize_weight, int8_matvec, screened_argmax: `qkv.decoding.argmax`; draft_matvec:
    `qkv.decoding.speculative`."""
    built = module()
    if built is None:
        return None
    observer = getattr(_observing, "observer", None)  # set by `observed` (qkv.decoding.recorded)
    return getattr(built, name) if observer is None else observer(name, getattr(built, name))


_observing = threading.local()  # per thread: another thread's kernel calls are not part of a recording


@contextmanager
def observed(observer: Callable[[str, Callable], Callable]) -> Iterator[None]:
    """While inside, `kernel(name)` on this thread returns observer(name, the kernel) in place of the
    kernel: a recording of a decoding step (`qkv.decoding.recorded`) sees qkv's kernel calls this way,
    since PyTorch's dispatcher never sees them."""
    previous, _observing.observer = getattr(_observing, "observer", None), observer
    try:
        yield
    finally:
        _observing.observer = previous


def plain(t: Tensor) -> bool:
    """A Tensor or Parameter, not a subclass: FSDP's DTensor holds one shard of a weight and may be used
    only inside its module's forward, and other subclasses (fake, meta) are not data to compute on."""
    return type(t) is Tensor or type(t) is torch.nn.Parameter


@cache
def _linear() -> ModuleType:
    from qkv.nn import linear  # imported on first use: linear imports this module

    return linear


def applies(x: Tensor) -> bool:
    """Whether qkv's elementwise kernels (GELU, dropout) serve x: a plain float32 CPU tensor, outside
    autocast and `torch.compile`, with `qkv.nn.linear.set_kernel` not at "pytorch". A decoding step asks
    this a few dozen times, so the cheapest tests come first."""
    return (
        type(x) is Tensor
        and x.dtype == torch.float32
        and x.is_cpu
        and not torch.is_autocast_enabled("cpu")
        and _linear().current_kernel() != "pytorch"
        and not torch.compiler.is_compiling()
    )


def same_kind(x: Tensor, *others: Tensor) -> bool:
    """Whether every one of `others` is a plain CPU tensor (or Parameter) of x's dtype: after `applies(x)`,
    whether the kernels serve all of them (cheaper than `applies` for each; `is_cpu` rather than comparing
    devices, which builds two device objects a tensor: 0.3 us of a decoding step's attention call)."""
    return all(plain(t) and t.dtype == x.dtype and t.is_cpu for t in others)


def main() -> int:
    if module() is None:
        print(
            "qkv: the CPU kernels are not available here; PyTorch's own (oneDNN, F.gelu, F.dropout, SDPA) are used",
            file=sys.stderr,
        )
    else:
        print(f"qkv: CPU kernels ready in {cache_dir() / build_name()}")
    return 0  # not an error: every operation still has a kernel


if __name__ == "__main__":
    raise SystemExit(main())
