"""Numeric options out of range are refused by the parser (exit 2, one error line naming the option)
before any model is loaded or file written."""

import pytest

from qkv.cli import main

BAD = [
    (["generate", "--max-new-tokens", "0"], "argument --max-new-tokens: must be at least 1, got 0"),
    (["generate", "--temperature", "-1"], "argument --temperature: must be in [0, inf], got -1"),
    (["generate", "--top-k", "-1"], "argument --top-k: must be at least 0, got -1"),
    (["generate", "--top-p", "0"], "argument --top-p: must be in (0, 1], got 0"),
    (["generate", "--top-p", "1.5"], "argument --top-p: must be in (0, 1], got 1.5"),
    (["generate", "--threads", "-1"], "argument --threads: must be at least 0, got -1"),
    (["generate", "--top-k", "two"], "argument --top-k: invalid int value: 'two'"),
    (["translate", "--beam", "0"], "argument --beam: must be at least 1, got 0"),
    (["translate", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["evaluate", "--src", "s", "--ref", "r", "--beam", "-2"], "argument --beam: must be at least 1, got -2"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_out_of_range_options_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        main([argv[0], "--model", str(tmp_path / "no-model"), *argv[1:]])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_average_last_zero_writes_nothing(tmp_path, capsys):
    """`--last 0` once averaged every checkpoint of the run (a slice from -0)."""
    with pytest.raises(SystemExit) as exited:
        main(["average", "--run", str(tmp_path), "--last", "0", "--out", str(tmp_path / "avg")])
    assert exited.value.code == 2
    assert "argument --last: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "avg").exists()


@pytest.mark.parametrize("option", ["--positions", "--d-model"])
def test_empty_positions_plot_is_refused(tmp_path, capsys, option):
    out = tmp_path / "p.png"
    with pytest.raises(SystemExit) as exited:
        main(["plot", "positions", option, "0", "--out", str(out)])
    assert exited.value.code == 2
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err
    assert not out.exists()
