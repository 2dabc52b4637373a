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
    assert "argument --last: must be at least 2, got 0" in capsys.readouterr().err
    assert not (tmp_path / "avg").exists()


def test_average_needs_two_distinct_checkpoints(tmp_path, capsys):
    """The mean of one checkpoint (or of one named twice) is a copy: refused before anything is read."""
    for named in (["a"], ["a", "b", "b/../a"]):
        assert main(["average", *(str(tmp_path / n) for n in named), "--out", str(tmp_path / "avg")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert ("only one checkpoint" if len(named) == 1 else "a checkpoint is named twice") in err
    assert not (tmp_path / "avg").exists()


@pytest.mark.parametrize("alpha", ["-0.5", "nan", "inf"])
def test_length_penalty_alpha_out_of_range_is_refused(tmp_path, capsys, alpha):
    with pytest.raises(SystemExit) as exited:
        main(["translate", "--model", str(tmp_path), "--alpha", alpha])
    assert exited.value.code == 2
    assert f"argument --alpha: must be in [0, 10], got {alpha}" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--positions", "--d-model"])
def test_empty_positions_plot_is_refused(tmp_path, capsys, option):
    out = tmp_path / "p.png"
    with pytest.raises(SystemExit) as exited:
        main(["plot", "positions", option, "0", "--out", str(out)])
    assert exited.value.code == 2
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err
    assert not out.exists()


def _outputs(tmp_path):
    """Each command with its output at or under the file `blocker`: (argv, message)."""
    block = tmp_path / "blocker"
    (tmp_path / "lm.toml").write_text(f'task = "lm"\nout = "{block}"\n[data]\nfiles = ["x.txt"]\n')
    model, src = str(tmp_path / "no-model"), str(tmp_path / "no-src")
    under = f"{block / 'x'}: cannot be written, {block} is a file"
    return [
        (["evaluate", "--model", model, "--src", src, "--ref", src, "--output", str(block / "x")], under),
        (["convert", "--to-hf", model, "--out", str(block / "x")], under),
        (["average", "--run", str(tmp_path), "--out", str(block / "x")], under),
        (["plot", "positions", "--out", str(block / "x.png")], f"{block / 'x.png'}: cannot be written"),
        (["plot", "attention", "--model", model, "--text", "a", "--out", str(block)], "is a file, but --out must be"),
        (["train", str(tmp_path / "lm.toml")], f"{block}: is a file, but `out` in {tmp_path / 'lm.toml'} must be"),
        (["demo", "--out", str(block)], f"{block}: is a file, but --out must be a directory"),
        (["evaluate", "--model", model, "--src", src, "--ref", src, "--output", str(tmp_path)], "is a directory"),
    ]


@pytest.mark.parametrize(
    "case",
    range(8),
    ids=["evaluate", "convert", "average", "plot-positions", "plot-attention", "train", "demo", "output-is-dir"],
)
def test_an_output_that_cannot_be_written_is_refused_first(tmp_path, capsys, case):
    """Checked before any model or data is read (the paths given for those do not exist), so a long
    evaluation cannot end in a traceback at its last line; the file in the way is left as it was."""
    (tmp_path / "blocker").write_text("keep me\n")
    argv, message = _outputs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert (tmp_path / "blocker").read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", ["convert-to-hf", "convert-from-hf", "average", "evaluate-src", "evaluate-ref"])
def test_an_output_that_is_also_an_input_is_refused_even_with_overwrite(tmp_path, capsys, command):
    """`convert --to-hf C --out C --overwrite` once replaced the checkpoint C with its own export;
    `evaluate --output REF` would have replaced the references with the translations."""
    for name in ("c", "d"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}\n")
    (tmp_path / "src.txt").write_text("a\n")
    (tmp_path / "ref.txt").write_text("b\n")
    c, d, src, ref = (str(tmp_path / n) for n in ("c", "d", "src.txt", "ref.txt"))
    argv, option = {
        "convert-to-hf": (["convert", "--to-hf", c, "--out", c + "/.", "--overwrite"], "--to-hf"),
        "convert-from-hf": (["convert", "--from-hf", c, "--out", c, "--overwrite"], "--from-hf"),
        "average": (["average", d, c, "--out", c, "--overwrite"], "checkpoint 2"),
        "evaluate-src": (["evaluate", "--model", c, "--src", src, "--ref", ref, "--output", src], "--src"),
        "evaluate-ref": (["evaluate", "--model", c, "--src", src, "--ref", ref, "--output", ref], "--ref"),
    }[command]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"is also {option}; writing there would destroy it" in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_plot_named_with_a_suffix_that_is_no_image_format_is_refused(tmp_path, capsys):
    """matplotlib's ValueError came as a traceback after the plot was drawn; and an existing file
    of another kind (here a checkpoint's config.json) is left as it was."""
    (tmp_path / "config.json").write_text("{}\n")
    assert main(["plot", "positions", "--out", str(tmp_path / "config.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"qkv plot: error: {tmp_path / 'config.json'}: '.json' is not an image format matplotlib writes " + (
        "(name a .png, .svg or .pdf)"
    )
    assert (tmp_path / "config.json").read_text() == "{}\n"
    assert main(["plot", "positions", "--positions", "4", "--d-model", "4", "--out", str(tmp_path / "p.svg")]) == 0
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


def test_a_one_file_plot_into_a_directory_lands_inside_it(tmp_path, capsys):
    """--out DIR once wrote DIR.png beside it and printed DIR; and a name without a suffix gets .png."""
    assert main(["plot", "positions", "--positions", "4", "--d-model", "4", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "positions.png")
    assert (tmp_path / "positions.png").is_file()
    assert main(["plot", "positions", "--positions", "4", "--d-model", "4", "--out", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "p.png") and (tmp_path / "p.png").is_file()


def test_reading_a_terminal_says_so(monkeypatch, capsys):
    """`qkv translate --model M` with no --input (or `--input -`) at a terminal waits for typed lines: it says
    so on stderr."""
    import io

    from qkv.commands import input_lines, input_name, input_text

    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal(io.BytesIO("ein Hund\n".encode())))
    assert input_lines(None) == ["ein Hund"]
    assert "end with Ctrl-D" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a\nb\n")))  # a pipe: nothing said
    assert input_lines(None) == ["a", "b"]
    assert capsys.readouterr().err == ""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"c\n")))  # "-" is standard input too
    assert input_lines("-") == ["c"] and input_name("-") == input_name(None) == "<stdin>"
    monkeypatch.setattr("sys.stdin", Terminal(io.BytesIO("the whole\ntext".encode())))
    assert input_text("-") == "the whole\ntext"  # --prompt-file -, perplexity --file -
    assert "end with Ctrl-D" in capsys.readouterr().err


def test_a_reader_that_goes_away_ends_quietly(tmp_path):
    """`qkv generate ... | head -c 3` once ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    import qkv
    from qkv.data.tokenizers import CharTokenizer
    from qkv.models.gpt import GPT, GPTConfig

    tok = CharTokenizer("abcdefgh")
    qkv.save(GPT(GPTConfig(vocab_size=8, block_size=16, d_model=16, n_heads=2, n_layers=1, d_ff=32)), tmp_path)
    tok.save(tmp_path)
    argv = ["generate", "--model", str(tmp_path), "--prompt", "ab", "--max-new-tokens", "100000", "--seed", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "qkv", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(2) == b"ab"  # the prompt comes first, then the tokens as they are made
    proc.stdout.close()  # the reader goes away mid-stream
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in err, err.decode()


def test_version_names_qkv_pytorch_and_python(capsys):
    import importlib.metadata
    import platform

    import torch

    import qkv

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    expected = f"qkv {qkv.__version__} (PyTorch {torch.__version__}, Python {platform.python_version()})"
    assert capsys.readouterr().out.strip() == expected
    assert importlib.metadata.version("qkv") == qkv.__version__  # pyproject.toml reads the same one


def test_the_cli_imports_no_training_code_until_a_command_needs_it():
    """Every command starts by importing `qkv.cli`; the training loop is imported only by `qkv train`,
    and FSDP (torch.distributed's fsdp, checkpoint and tensor packages, 0.5-0.9 s) only by a run that
    shards its model."""
    import subprocess
    import sys

    for module, absent in (("qkv.cli", ("qkv.train.loop",)), ("qkv.train.loop", ())):
        heavy = (*absent, "torch.distributed.fsdp")
        probe = f"import sys, {module}; print(sorted(m for m in {heavy} if m in sys.modules))"
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "[]", module + ": " + done.stdout + done.stderr
