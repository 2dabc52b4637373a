"""qkv download: the public datasets the configs use, fetched and checked against their SHA-256."""

from __future__ import annotations

import argparse
from pathlib import Path

from qkv.commands import writable


def cmd_download(args: argparse.Namespace) -> int:
    from qkv.data.download import fetch

    root = writable(Path(args.out), "directory", "--out")
    for name in args.datasets:
        for path, what in fetch(name, root, host=args.host, overwrite=args.overwrite, progress=not args.no_progress):
            print(f"{path} ({'already there, checksum right' if what == 'kept' else 'downloaded, checksum right'})")
    return 0


def add_parsers(sub) -> None:
    from qkv.data.download import DATASETS, GITHUB

    dl = sub.add_parser(
        "download",
        help="fetch the benchmark datasets (Tiny Shakespeare, Multi30k, SST-2, newstest2014, WikiText-2, books)",
        description="Download public datasets from fixed commits of the repositories that publish them, "
        "unpack them, and check every file's SHA-256 before it is given its name. The layout under --out "
        "is the one the configs in configs/ read (OUT/multi30k/train.de, ...). Files already there with "
        "the right checksum are kept; other files are never replaced without --overwrite.",
    )
    dl.add_argument("datasets", nargs="+", choices=list(DATASETS), metavar="DATASET", help=", ".join(DATASETS))
    dl.add_argument(
        "--out", default="../shared/data", help="root directory (default ../shared/data, where the configs look)"
    )
    dl.add_argument("--host", default=GITHUB, help=f"where to read the repositories' files (default {GITHUB})")
    dl.add_argument("--overwrite", action="store_true", help="replace files whose contents differ")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars (they go to standard error)")
    dl.set_defaults(handler=cmd_download)
