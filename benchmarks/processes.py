"""Run one benchmark script in several processes, one after another, and report each figure's spread.

    python benchmarks/processes.py --runs 3 benchmarks/decoding.py --model runs/multi30k_de_en/best

Each script already alternates qkv and its reference within one process and reports medians. On a
shared machine the larger spread is between processes: session 31's runs of `seq2seq_train.py` gave
Marian 1.225-1.365x, the reference's own rate moving 5,008-5,694 tokens/s from process to process. This
runs the script --runs times, passes every JSON line through as it comes, and then prints, for each
benchmark, one JSON line with every run's ratios and their median (`"processes"` and
`"ratio_medians"`). Arguments after the script's path go to the script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def ratios(record: dict) -> dict[str, float]:
    """The `ratio_vs_*` figures of one benchmark line."""
    return {k: v for k, v in record.items() if k.startswith("ratio_vs_") and isinstance(v, (int, float))}


def summarise(records: list[dict]) -> list[dict]:
    """Per benchmark (in first-seen order): each process's ratios and their medians."""
    runs: dict[str, list[dict[str, float]]] = {}
    for record in records:
        found = ratios(record)
        if found:
            runs.setdefault(str(record["benchmark"]), []).append(found)
    summary = []
    for name, seen in runs.items():
        keys = [k for k in seen[0] if all(k in r for r in seen)]
        medians = {k: round(statistics.median(r[k] for r in seen), 3) for k in keys}
        summary.append({"benchmark": name, "processes": seen, "ratio_medians": medians})
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="processes, one after another (default: 3)")
    parser.add_argument("script", help="a benchmark script, e.g. benchmarks/decoding.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    records = []
    for _ in range(args.runs):
        done = subprocess.run([sys.executable, args.script, *args.args], capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stderr)
            print(f"processes.py: {args.script} exited with status {done.returncode}", file=sys.stderr)
            return done.returncode
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                print(line, flush=True)
                records.append(json.loads(line))
    for line in summarise(records):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
