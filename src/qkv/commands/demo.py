"""qkv demo: the built-in demo (a date translator trained in under a minute)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qkv.commands import UsageError, writable

DEMO_MARKER = ".qkv-demo"


def cmd_demo(args: argparse.Namespace) -> int:
    from qkv.demo.run import DemoConfig, run_demo

    out = writable(Path(args.out), "directory", "--out")
    if out.exists() and any(out.iterdir()) and not (out / DEMO_MARKER).exists() and not args.overwrite:
        raise UsageError(f"{out}: exists and holds something other than a demo run (use --overwrite or another --out)")
    overrides = {k: v for k, v in {"steps": args.steps, "seed": args.seed}.items() if v is not None}
    cfg = DemoConfig.from_dict(overrides, source="command line")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `qkv demo`; a later demo may replace this directory's contents\n")
    result = run_demo(out, cfg, progress=not args.no_progress)
    return 0 if result["accuracy"] >= args.min_accuracy else 1


def add_parsers(sub) -> None:
    demo = sub.add_parser(
        "demo",
        help="train a small translator of spelled-out dates (under a minute on a CPU) and plot its attention",
        description="Train a small encoder-decoder to turn dates written in words into ISO dates "
        "(e.g. 'twenty first of november two thousand twenty six' -> 2026-11-21), report exact match on "
        "1,000 held-out dates, print examples, save the model and a cross-attention heat map.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--steps", type=int, help="training steps (default: 600)")
    demo.add_argument("--seed", type=int, help="random seed (default: 0)")
    demo.add_argument("--min-accuracy", type=float, default=0.99, help="exit 1 below this exact match (default 0.99)")
    demo.add_argument("--overwrite", action="store_true", help="write into --out even if it holds other files")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(handler=cmd_demo)
