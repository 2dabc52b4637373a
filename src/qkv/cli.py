"""The `qkv` command line. Each subcommand parses its arguments here and calls library functions.

Errors a user can fix (bad input, bad config, damaged checkpoint) print one line and exit with
status 2; nothing on disk is changed by a command that fails that way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qkv.checkpoint import CheckpointError
from qkv.config import ConfigError

DEMO_MARKER = ".qkv-demo"


class UsageError(Exception):
    """A problem with the user's input; reported in one line with exit status 2."""


def _demo(args: argparse.Namespace) -> int:
    from qkv.demo.run import DemoConfig, run_demo

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / DEMO_MARKER).exists() and not args.overwrite:
        raise UsageError(f"{out}: exists and holds something other than a demo run (use --overwrite or another --out)")
    overrides = {k: v for k, v in {"steps": args.steps, "seed": args.seed}.items() if v is not None}
    cfg = DemoConfig.from_dict(overrides, source="command line")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `qkv demo`; a later demo may replace this directory's contents\n")
    result = run_demo(out, cfg, progress=not args.no_progress)
    return 0 if result["accuracy"] >= args.min_accuracy else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qkv", description="The Transformer family (encoder-decoder, BERT, GPT) in one small PyTorch codebase."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train a small translator of spelled-out dates (about a minute on a CPU) and plot its attention",
        description="Train a small encoder-decoder to turn dates written in words into ISO dates "
        "(e.g. 'twenty first of november two thousand twenty six' -> 2026-11-21), report exact match on "
        "1,000 held-out dates, print examples, save the model and a cross-attention heat map.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--steps", type=int, help="training steps (default: 800)")
    demo.add_argument("--seed", type=int, help="random seed (default: 0)")
    demo.add_argument("--min-accuracy", type=float, default=0.99, help="exit 1 below this exact match (default 0.99)")
    demo.add_argument("--overwrite", action="store_true", help="write into --out even if it holds other files")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, ConfigError, CheckpointError) as err:
        print(f"qkv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qkv {args.command}: interrupted", file=sys.stderr)
        return 130
