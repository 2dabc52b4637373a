"""How qkv's compiled CPU kernels (`qkv.nn.native`: matvec, gelu_tanh, dropout, attention) are built, cached and done
without: a build keyed by processor and source, a lock left by a killed build cleared, and a failed
build answered by one warning and PyTorch's own kernels everywhere."""

import os
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import native_kernel, needs_build

import qkv.nn.linear as qlinear
from qkv.nn import native
from qkv.nn.attention import attend
from qkv.nn.dropout import dropout
from qkv.nn.gelu import gelu_tanh
from qkv.nn.linear import linear, set_kernel


@needs_build
def test_work_is_split_across_threads_where_pytorch_has_openmp():
    """Without -fopenmp, at::parallel_for silently runs everything on one thread: half the read rate."""
    native_kernel("matvec")
    assert native.module().uses_openmp() == torch.backends.openmp.is_available()


def test_a_failed_build_warns_once_and_leaves_pytorchs_kernels(monkeypatch):
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)  # where matvec would be chosen
    monkeypatch.setattr(native, "_state", {})

    def no_compiler():
        raise RuntimeError("c++: command not found")

    monkeypatch.setattr(native, "_build", no_compiler)
    previous = set_kernel("auto")
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*command not found.*using PyTorch's"):
            assert native.kernel("matvec") is None
        x, w = torch.randn(1, 1, 768), torch.randn(3072, 768)
        h = torch.randn(4, 8, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            with torch.no_grad():
                torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-4)
            y = gelu_tanh(h)
            assert type(y.grad_fn).__name__ == "GeluBackward0"  # PyTorch's own
            torch.testing.assert_close(y, F.gelu(h, approximate="tanh"))
            torch.manual_seed(0)
            dropped = dropout(h, 0.5)
            torch.manual_seed(0)
            assert torch.equal(dropped, F.dropout(h, 0.5))  # PyTorch's own mask
            q = torch.randn(2, 2, 5, 32, requires_grad=True)
            out, _ = attend(q, q, q, None, True, 0.0, False)
            assert type(out.grad_fn).__name__.startswith("ScaledDotProduct")  # SDPA
    finally:
        set_kernel(previous)


def test_the_build_name_follows_the_processor_and_the_source(monkeypatch):
    name = native.build_name()
    assert name == native.build_name()  # stable within a machine
    monkeypatch.setattr(native, "_processor", lambda: "vendor_id: OtherVendor\nflags: sse2")
    assert native.build_name() != name  # never a binary built for another processor


@pytest.mark.parametrize(
    "vendor, flags, wide",
    [
        ("GenuineIntel", "sse2 avx2 avx512f", True),
        ("GenuineIntel", "sse2 avx2", False),
        ("AuthenticAMD", "avx512f", False),
    ],
)
def test_vector_width_512_only_where_measured(monkeypatch, vendor, flags, wide):
    """512-bit loops on Intel processors with AVX-512, where they were measured faster; the flags are
    part of the build name, so each choice is a build of its own."""
    monkeypatch.setattr(native, "cpuinfo", lambda: f"vendor_id\t: {vendor}\nflags\t\t: {flags}\n\nvendor_id\t: x")
    assert native.flags() == native.FLAGS + (native.WIDE if wide else [])
    name = native.build_name()
    monkeypatch.setattr(native, "WIDE", [])
    assert (native.build_name() != name) == wide


def test_every_source_and_header_is_in_the_build_name(monkeypatch, tmp_path):
    names = [native.build_name()]
    changed = tmp_path / "attention.cpp"
    changed.write_text(native.SOURCES[-1].read_text() + "\n// changed\n")
    monkeypatch.setattr(native, "SOURCES", [*native.SOURCES[:-1], changed])
    names.append(native.build_name())
    header = tmp_path / "exp_approx.h"
    header.write_text(native.HEADERS[0].read_text() + "\n// changed\n")
    monkeypatch.setattr(native, "HEADERS", [header])
    names.append(native.build_name())
    assert len(set(names)) == 3  # each change gives a new build


def test_a_lock_left_by_a_killed_build_is_cleared(tmp_path):
    """PyTorch's builder would wait for ever on a lock file that a `kill -9` left behind."""
    fresh, stale = tmp_path / "fresh", tmp_path / "stale"
    fresh.touch()
    stale.touch()
    old = time.time() - native.STALE_LOCK_S - 60
    os.utime(stale, (old, old))
    native._clear_stale_lock(fresh)
    native._clear_stale_lock(stale)
    native._clear_stale_lock(tmp_path / "absent")
    assert fresh.exists() and not stale.exists()


def test_every_kernel_source_is_shipped_with_the_package():
    """An installed qkv compiles its kernels from the files pyproject.toml ships: each must be among them."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    shipped = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["qkv"]
    for source in native.SOURCES + native.HEADERS:
        name = source.relative_to(root / "src" / "qkv").as_posix()
        assert any(fnmatch.fnmatch(name, pattern) for pattern in shipped), f"{name} is not in the package data"
