"""The `qkv` subcommands: each module adds its parsers and holds the handlers they call."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Literal


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


def visible(token: str) -> str:
    """A token as text a reader can see: a space as ␣, a newline as \\n, nothing as ∅."""
    return token.replace("\n", "\\n").replace(" ", "\u2423") or "\u2205"


def add_device_option(parser) -> None:
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the model runs: auto (the default) is the GPU when torch sees one, else the CPU",
    )


def add_threads_option(parser, note: str = "") -> None:
    """--threads, which `load_gpt` applies."""
    parser.add_argument("--threads", type=at_least(0), default=0, help=f"CPU threads (0 = one per core){note}")


def load_model(path: str, device: str):
    """The checkpoint at `path` (qkv.load) on the device --device names (chosen as training chooses), in
    evaluation mode."""
    from qkv.checkpoint import load
    from qkv.train.distributed import device as choose

    return load(path).to(choose(device, "--device"))


def load_gpt(args, command: str):
    """(model, tokenizer) of the GPT checkpoint `--model` names, on `--device`, after setting the
    CPU threads `--threads` asks for; any other family is a one-line error naming `command`."""
    import torch

    from qkv.data.tokenizers import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.device)
    if model.family != "gpt":
        raise UsageError(f"{args.model}: is a {model.family} model; {command} needs a gpt model")
    return model, load_tokenizer(args.model)


def writable(path: Path, kind: Literal["file", "directory"], what: str) -> Path:
    """Refuse, before any work is done, an output `path` that could not be written at the end: an
    existing path of the other kind, or a parent that is a file or not writable. `what` names the
    option or config key in the message."""
    if path.exists() and path.is_dir() != (kind == "directory"):
        raise UsageError(f"{path}: is a {'directory' if path.is_dir() else 'file'}, but {what} must be a {kind}")
    parent = path.parent
    while not parent.exists():  # the nearest existing ancestor: the one the writes will go through
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{path}: cannot be written, {parent} is a file ({what})")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise UsageError(f"{path}: no permission to write there ({what})")
    return path


def not_an_input(out: Path, what: str, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output that is also one of the command's inputs ({option: path}): --overwrite or
    not, writing there would destroy what is being read (`convert --to-hf C --out C --overwrite`
    once replaced the checkpoint C with its own export)."""
    for option, path in inputs.items():
        if path is not None and Path(path).resolve() == out.resolve():
            raise UsageError(f"{out}: {what} is also {option}; writing there would destroy it (give another {what})")


def refuse_nonempty(out: Path, overwrite: bool) -> None:
    writable(out, "directory", "--out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out}: already exists and is not empty (use --overwrite, or another --out)")


def input_lines(path: str | None) -> list[str]:
    """The lines of --input, or of standard input when it is not given or "-" (UTF-8 checked either way)."""
    import sys

    from qkv.data.parallel import read_lines

    if path and path != "-":
        return read_lines(path)
    if sys.stdin.isatty():  # a bare command at a terminal would otherwise seem to hang
        print("reading sentences from standard input, one a line; end with Ctrl-D (or give --input)", file=sys.stderr)
    return _stdin_text().splitlines()


def input_name(path: str | None) -> str:
    """How messages name an input: its path, or <stdin> (not given, or "-")."""
    return "<stdin>" if path in (None, "-") else path


def _stdin_text() -> str:
    import sys

    from qkv.data.text import BOM

    try:
        return sys.stdin.buffer.read().decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as err:
        raise UsageError(f"<stdin>: invalid UTF-8 at byte {err.start}") from None


def input_text(path: str) -> str:
    """The whole text of a file, or of standard input for "-" (UTF-8 checked either way; an empty
    one is an error naming it)."""
    import sys

    from qkv.data.text import read_text

    if path != "-":
        return read_text(path)
    if sys.stdin.isatty():
        print("reading the text from standard input; end with Ctrl-D", file=sys.stderr)
    text = _stdin_text()
    if not text.strip():
        raise UsageError('<stdin>: no text came ("-" reads it from standard input)')
    return text


def lines_named(source: str, line_numbers: list[int]) -> str:
    """How a note names the lines it is about: the first, and how many more ("in.txt:4 and 2 more")."""
    n = len(line_numbers)
    return f"{source}:{line_numbers[0]}" + (f" and {n - 1} more" if n > 1 else "")


def encode_text(tokenizer, text: str, where: str) -> list[int]:
    """tokenizer.encode(text), with a refusal naming where the text came from (a file, or --prompt)
    before the line and column that the tokenizer names."""
    from qkv.data.tokenizers import TokenizerError

    try:
        return tokenizer.encode(text)
    except TokenizerError as err:
        raise UsageError(f"{where}: {err}") from None
