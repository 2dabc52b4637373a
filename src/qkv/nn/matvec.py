"""The single-row product of batch-1 decoding, y = W x + b, as a small C++ loop (`matvec.cpp`) built
for the processor it runs on.

`qkv.nn.linear` sends every no-gradient product of one input row here, at any size, on x86 processors
that are not Intel's (where it would otherwise go to oneDNN or MKL): on session 24's AMD EPYC it read a
124M GPT's 494 MB of matrices at 36-38 GB/s against oneDNN's 21-24 and MKL's 11-12, and a decoding step
took 1.4-1.6x less time than on oneDNN (docs/PERFORMANCE.md, levers table). The extension is
compiled once per processor, source and PyTorch version (about 30 s, with the C++ compiler PyTorch's
`cpp_extension` finds, and ninja), cached under ~/.cache/qkv (or $QKV_CACHE_DIR), and loaded directly
from there afterwards. `make setup` builds it; if the build fails, qkv warns once and keeps oneDNN.

    python -c "from qkv.nn import matvec; matvec.main()"    # build now, or say why it cannot be

(`python -m qkv.nn.matvec` works too, but Python warns that `qkv.nn` has already imported it.)
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
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("matvec.cpp")
# Native code is safe to cache: the build is keyed by processor (build_name). -fopenmp is what makes
# at::parallel_for split the rows across PyTorch's threads; without it the loop runs on one thread.
FLAGS = ["-O3", "-march=native", "-fopenmp"]
MatVec = Callable[[Tensor, Tensor, Tensor | None], Tensor]

_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}  # "module" -> the loaded extension, or None once a build failed


def cache_dir() -> Path:
    root = os.environ.get("QKV_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qkv"
    return Path(root)


def _processor() -> str:
    """What the compiled code depends on: the vendor, model and instruction-set flags of this processor."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() + platform.machine()
    first = info.split("\n\n", 1)[0]  # the first processor's block
    keep = ("vendor_id", "model name", "flags")
    return "\n".join(line for line in first.splitlines() if line.split(":")[0].strip() in keep)


def build_name() -> str:
    """A module name that changes with anything the binary depends on, so a stale build is never loaded."""
    key = hashlib.sha256()
    for part in (
        SOURCE.read_bytes(),
        " ".join(FLAGS).encode(),
        torch.__version__.encode(),
        sys.version.encode(),
        _processor().encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return "qkv_matvec_" + key.hexdigest()[:16]


STALE_LOCK_S = 600  # a build takes about 30 s; a lock this old belongs to a process that was killed


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
            f"qkv: compiling the batch-1 matrix-vector kernel for this processor (once, about 30 s) into {directory}",
            file=sys.stderr,
            flush=True,
        )
        directory.mkdir(parents=True, exist_ok=True)
        _clear_stale_lock(directory / "lock")
        # ninja may be installed beside this interpreter (pip's `ninja`) without that directory on PATH.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        from torch.utils.cpp_extension import load  # imported here: it takes about 2 s

        return load(name, [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"], build_directory=str(directory))
    spec = importlib.util.spec_from_file_location(name, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module() -> ModuleType | None:
    """The compiled extension (`matvec`, `uses_openmp`), building it on first call; None if it cannot be
    built, after one warning that says why."""
    if "module" in _state:
        return _state["module"]
    with _lock:
        if "module" not in _state:
            try:
                _state["module"] = _build()
            except Exception as error:  # no compiler, no ninja, a compile error: oneDNN stays in use
                warnings.warn(
                    f"qkv: the matrix-vector kernel could not be built ({str(error).strip()[:300]}); "
                    "using oneDNN instead",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _state["module"] = None
    return _state["module"]


def kernel() -> MatVec | None:
    """The compiled `matvec(x, weight, bias)`, or None where it cannot be built. x: (..., in) holding a
    single row; weight: (out, in); bias: (out,) or None -> (..., out)."""
    built = module()
    return None if built is None else built.matvec


def main() -> int:
    found = kernel()
    if found is None:
        print("qkv: the matrix-vector kernel is not available here; linear layers use oneDNN", file=sys.stderr)
    else:
        print(f"qkv: matrix-vector kernel ready in {cache_dir() / build_name()}")
    return 0  # not an error: every product still has a kernel


if __name__ == "__main__":
    raise SystemExit(main())
