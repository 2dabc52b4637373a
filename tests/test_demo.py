"""The built-in demo: its task, its training (the real default run), and the CLI around it."""

import datetime as dt

import pytest

import qkv
from qkv.cli import main
from qkv.demo.dates import DateTask, iso, spell, year_words
from qkv.demo.run import DemoConfig, evaluate, train


def test_spelling():
    d = dt.date(2026, 11, 21)
    assert " ".join(spell(d, 0)) == "twenty first of november two thousand twenty six"
    assert " ".join(spell(dt.date(1905, 3, 30), 1)) == "march thirtieth nineteen oh five"
    assert year_words(1900) == ["nineteen", "hundred"] and year_words(2000) == ["two", "thousand"]
    assert "".join(iso(d)) == "2026-11-21"


def test_held_out_dates_are_never_sampled():
    task = DateTask(seed=3, n_test=500)
    test_dates = {d for d, _ in task.test}
    assert len(test_dates) == 500
    assert not any(task.sample()[0] in test_dates for _ in range(20000))


@pytest.mark.slow
def test_default_demo_training_reaches_99_percent(tmp_path, capsys):
    """The exact configuration `qkv demo` runs (default DemoConfig), evaluated on its 1,000 held-out
    dates; saved as the demo saves it, `qkv translate` reads the model and gives the same dates."""
    model, vocab, task, _ = train(DemoConfig(), progress=False)
    accuracy, preds = evaluate(model, vocab, task.test)
    print(f"\ndemo exact match: {accuracy:.1%}")
    assert accuracy >= 0.99
    qkv.save(model, tmp_path / "model")
    vocab.save(tmp_path / "model" / "vocab.json")
    (tmp_path / "dates.txt").write_text("".join(" ".join(spell(d, s)) + "\n" for d, s in task.test[:100]))
    capsys.readouterr()
    for beam in ("1", "4"):
        args = ["translate", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "dates.txt"), "--beam", beam]
        assert main(args) == 0
        assert capsys.readouterr().out.splitlines() == preds[:100]


def test_cli_demo_writes_model_and_png(tmp_path, capsys):
    """Wiring only (a few steps, no accuracy bar): files appear, the model loads, PNG is valid."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "20", "--min-accuracy", "0", "--no-progress"]) == 0
    png = (out / "cross_attention.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    model = qkv.load(out / "model")
    assert model.config.d_model == DemoConfig().d_model
    assert "exact match on 1000 held-out dates" in capsys.readouterr().out
    # a second demo run may replace the first one's files
    assert main(["demo", "--out", str(out), "--steps", "2", "--min-accuracy", "0", "--no-progress"]) == 0


def test_cli_demo_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds something other than a demo run" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_cli_bad_value_is_a_one_line_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x"), "--steps", "-5"]) == 2
    assert "steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
