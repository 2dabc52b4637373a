"""The `qkv` subcommands: each module adds its parsers and holds the handlers they call."""

from __future__ import annotations

import argparse
from pathlib import Path


class UsageError(Exception):
    """A problem with the user's input; reported in one line with exit status 2."""


def at_least(low: int):
    """An argparse `type`: an integer >= low. Anything else is argparse's usage error (exit status 2),
    before a model is loaded or a file written."""

    def parse(text: str) -> int:
        value = int(text)  # a ValueError is argparse's "invalid int value"
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def in_range(low: float, high: float, low_open: bool = False):
    """An argparse `type`: a float in [low, high], or in (low, high] when `low_open`."""

    def parse(text: str) -> float:
        value = float(text)
        if not (low < value if low_open else low <= value) or not value <= high:
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def add_device_option(parser) -> None:
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the model runs: auto (the default) is the GPU when torch sees one, else the CPU",
    )


def load_model(path: str, device: str):
    """The checkpoint at `path` (qkv.load) on the device --device names (chosen as training chooses), in
    evaluation mode."""
    from qkv.checkpoint import load
    from qkv.train.distributed import device as choose

    return load(path).to(choose(device, "--device"))


def refuse_nonempty(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out}: already exists and is not empty (use --overwrite, or another --out)")


def input_lines(path: str | None) -> list[str]:
    """The lines of --input, or of standard input when it is not given (UTF-8 checked either way)."""
    import sys

    from qkv.data.parallel import read_lines

    if path:
        return read_lines(path)
    try:
        return sys.stdin.buffer.read().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(f"<stdin>: invalid UTF-8 at byte {err.start}") from None
