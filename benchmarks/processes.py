"""Run one benchmark script in several processes, one after another, and report each figure's spread.

    python benchmarks/processes.py --runs 3 benchmarks/decoding.py --model runs/multi30k_de_en/best

Each script already alternates qkv and its reference within one process and reports medians. On a
shared machine the larger spread is between processes: session 31's runs of `seq2seq_train.py` gave
Marian 1.225-1.365x, the reference's own rate moving 5,008-5,694 tokens/s from process to process. This
runs the script --runs times, passes every JSON line through as it comes, and then prints, for each
benchmark, one JSON line with every run's ratios and their median (`"processes"` and
`"ratio_medians"`), and the medians of its other figures, the rates and MFU (`"figure_medians"`).
Arguments after the script's path go to the script. `make bench` runs fp32 training, the small GPT's
generation and greedy decoding this way (session 32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def ratios(record: dict) -> dict[str, float]:
    """The `ratio_vs_*` figures of one benchmark line."""
    return {k: v for k, v in record.items() if k.startswith("ratio_vs_") and _number(v)}


def figures(record: dict) -> dict[str, float]:
    """The other numbers of one benchmark line (each contender's rate, MFU), nested ones named
    "outer.inner": `{"qkv": 7000, "mfu": {"qkv": 0.75}}` -> `{"qkv": 7000, "mfu.qkv": 0.75}`."""
    found = {}
    for k, v in record.items():
        if isinstance(v, dict):
            found.update({f"{k}.{inner}": x for inner, x in v.items() if _number(x)})
        elif _number(v) and not k.startswith("ratio_vs_"):
            found[k] = v
    return found


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def medians(seen: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure that every run has."""
    keys = [k for k in seen[0] if all(k in r for r in seen)]
    return {k: round(statistics.median(r[k] for r in seen), 3) for k in keys}


def summarise(records: list[dict]) -> list[dict]:
    """Per benchmark (in first-seen order): each process's ratios and their medians, and the medians of
    its other figures (`figure_medians`)."""
    runs: dict[str, list[dict]] = {}
    for record in records:
        if ratios(record):
            runs.setdefault(str(record["benchmark"]), []).append(record)
    summary = []
    for name, seen in runs.items():
        found = [ratios(r) for r in seen]
        summary.append(
            {
                "benchmark": name,
                "processes": found,
                "ratio_medians": medians(found),
                "figure_medians": medians([figures(r) for r in seen]),
            }
        )
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
