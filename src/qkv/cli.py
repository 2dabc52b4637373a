"""The `qkv` command line: assembles the subcommands of `qkv.commands` and maps user errors to exit 2.

Errors a user can fix (bad input, bad config, damaged checkpoint) print one line and exit with
status 2; nothing on disk is changed by a command that fails that way.
"""

from __future__ import annotations

import argparse
import os
import sys

from qkv.checkpoint import CheckpointError
from qkv.commands import (
    UsageError,
    classify,
    convert,
    demo,
    download,
    fill_mask,
    generate,
    perplexity,
    plot,
    tokenize,
    train,
    translation,
)
from qkv.config import ConfigError
from qkv.data.download import DownloadError
from qkv.data.text import DataError
from qkv.data.tokenizers import TokenizerError
from qkv.train import TrainingError

USER_ERRORS = (UsageError, ConfigError, CheckpointError, DataError, TokenizerError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qkv", description="The Transformer family (encoder-decoder, BERT, GPT) in one small PyTorch codebase."
    )
    parser.add_argument("--version", action="version", version=_version(), help="show the versions (for bug reports)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        demo,
        train,
        translation,
        generate,
        perplexity,
        classify,
        fill_mask,
        convert,
        plot,
        tokenize,
        download,
    ):
        module.add_parsers(sub)
    return parser


def _version() -> str:
    """qkv's version and what it runs on: the three facts a bug report needs first."""
    import platform

    import torch

    from qkv import __version__

    return f"qkv {__version__} (PyTorch {torch.__version__}, Python {platform.python_version()})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as err:
        print(f"qkv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (TrainingError, DownloadError) as err:  # not the input's fault: status 1, still one line
        print(f"qkv {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qkv {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`qkv generate ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141  # 128 + SIGPIPE, what a tool killed by the signal reports
