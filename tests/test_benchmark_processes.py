"""`benchmarks/processes.py`: a benchmark run in several processes, each figure's ratios gathered."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "processes.py"


def load():
    spec = importlib.util.spec_from_file_location("bench_processes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summarise_takes_each_benchmarks_median_ratio():
    records = [
        {"benchmark": "a", "ratio_vs_x": 1.2, "ratio_vs_y": 2.0, "qkv": 5, "mfu": {"qkv": 0.7, "x": "n/a"}},
        {"benchmark": "b", "n": 64},  # no ratio: not summarised
        {"benchmark": "a", "ratio_vs_x": 1.4, "ratio_vs_y": 1.0, "qkv": 9, "mfu": {"qkv": 0.9}, "batch": 64},
        # a ratio missing from one run: left out of the medians
        {"benchmark": "a", "ratio_vs_x": 1.3, "qkv": 6, "mfu": {"qkv": 0.8}, "torch": "2.13.0", "ok": True},
    ]
    (summary,) = load().summarise(records)
    assert summary["benchmark"] == "a"
    assert summary["processes"] == [
        {"ratio_vs_x": 1.2, "ratio_vs_y": 2.0},
        {"ratio_vs_x": 1.4, "ratio_vs_y": 1.0},
        {"ratio_vs_x": 1.3},
    ]
    assert summary["ratio_medians"] == {"ratio_vs_x": 1.3}
    # the other numbers (one level of nesting), those every run has; text and flags are not figures
    assert summary["figure_medians"] == {"qkv": 6, "mfu.qkv": 0.8}


def test_runs_the_script_in_separate_processes(tmp_path):
    """Each run is a new process (the fake script sees a new pid), lines pass through, a summary follows."""
    fake = tmp_path / "fake.py"
    fake.write_text(
        "import json, os, sys\n"
        "print('noise')\n"
        "print(json.dumps({'benchmark': 'f', 'ratio_vs_ref': os.getpid(), 'arg': sys.argv[1]}))\n"
    )
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "3", str(fake), "--flag"], capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["benchmark"] for line in lines] == ["f", "f", "f", "f"]
    assert all(line["arg"] == "--flag" for line in lines[:3])
    ratios = [line["ratio_vs_ref"] for line in lines[:3]]
    assert len(set(ratios)) == 3  # three processes
    assert lines[3]["processes"] == [{"ratio_vs_ref": r} for r in ratios]
    assert lines[3]["ratio_medians"] == {"ratio_vs_ref": sorted(ratios)[1]}


def test_a_failing_script_stops_the_runs(tmp_path):
    fake = tmp_path / "fails.py"
    fake.write_text("import sys\nsys.exit(3)\n")
    done = subprocess.run([sys.executable, str(SCRIPT), str(fake)], capture_output=True, text=True)
    assert done.returncode == 3
    assert "exited with status 3" in done.stderr
