"""Each plot command writes a valid PNG, on tiny models of both families."""

import pytest
import torch
from conftest import tiny_config

import qkv
from qkv.cli import main
from qkv.data.subword import PairTokenizer
from qkv.data.tokenizers import CharTokenizer
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import EncoderDecoder

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = open(path, "rb").read()
    return data[:8] == PNG and len(data) > 2000


@pytest.fixture
def translator(tmp_path):
    lines = ["ein kleiner hund rennt", "zwei katzen schlafen", "der hund sieht die katze"] * 5
    tok = PairTokenizer.train(lines, [s.upper() for s in lines], vocab_size=40, shared=True)
    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(src_vocab_size=tok.vocab_sizes[0], tgt_vocab_size=tok.vocab_sizes[1]))
    qkv.save(model, tmp_path / "mt")
    tok.save(tmp_path / "mt")
    return tmp_path / "mt"


def test_plot_attention_translation(translator, tmp_path, capsys):
    assert (
        main(
            ["plot", "attention", "--model", str(translator), "--text", "der kleine hund", "--out", str(tmp_path / "p")]
        )
        == 0
    )
    names = ["encoder_self_attention.png", "decoder_self_attention.png", "cross_attention.png"]
    assert all(_is_png(tmp_path / "p" / n) for n in names)
    assert (
        main(
            [
                "plot",
                "attention",
                "--model",
                str(translator),
                "--text",
                "hund",
                "--layer",
                "2",
                "--head",
                "1",
                "--out",
                str(tmp_path / "one"),
            ]
        )
        == 0
    )
    assert _is_png(tmp_path / "one" / "cross_attention.png")
    assert main(["plot", "attention", "--model", str(translator), "--text", "x", "--layer", "9"]) == 2
    assert "the model has layers 1 to 2" in capsys.readouterr().err


def test_plot_attention_gpt(tmp_path, capsys):
    tok = CharTokenizer.train("hello world, how are you?")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, d_model=16, n_heads=2, n_layers=2, d_ff=32))
    qkv.save(model, tmp_path / "gpt")
    tok.save(tmp_path / "gpt")
    assert (
        main(
            [
                "plot",
                "attention",
                "--model",
                str(tmp_path / "gpt"),
                "--text",
                "how are you",
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    assert _is_png(tmp_path / "p" / "self_attention.png")
    empty = ["plot", "attention", "--model", str(tmp_path / "gpt"), "--text", "", "--out", str(tmp_path / "e")]
    assert main(empty) == 2
    assert (
        capsys.readouterr().err.strip()
        == "qkv plot: error: --text is empty: a GPT needs at least one token to attend over"
    )
    long = [
        "plot",
        "attention",
        "--model",
        str(tmp_path / "gpt"),
        "--text",
        "how are you? " * 5,
        "--out",
        str(tmp_path / "l"),
    ]
    assert main(long) == 0  # 65 characters, 32 positions: the end of the text, and a note that says so
    assert capsys.readouterr().err.strip() == (
        "qkv plot: note: --text has 65 tokens; plotted its last 32, as many as fit the model's positions"
    )
    assert _is_png(tmp_path / "l" / "self_attention.png")


def test_plot_positions_and_schedule(tmp_path):
    assert main(["plot", "positions", "--out", str(tmp_path / "pos.png")]) == 0
    assert _is_png(tmp_path / "pos.png")
    assert (
        main(
            [
                "plot",
                "schedule",
                "configs/multi30k_de_en.toml",
                "--set",
                "train.steps=3000",
                "--out",
                str(tmp_path / "s.png"),
            ]
        )
        == 0
    )
    assert _is_png(tmp_path / "s.png")


def test_plot_schedule_of_every_task(tmp_path, capsys):
    """BERT configs too (only eq. (3) needs the model's width), with the task's default optimiser."""
    for config in ("configs/sst2.toml", "configs/bert_pretrain_books.toml", "configs/shakespeare_char.toml"):
        assert main(["plot", "schedule", config, "--set", "train.steps=50", "--out", str(tmp_path / "s.png")]) == 0
        assert _is_png(tmp_path / "s.png")
    noam = ["--set", "optim.schedule=noam", "--set", "optim.lr=1.0", "--set", "model.preset=nope"]
    assert main(["plot", "schedule", "configs/sst2.toml", *noam, "--out", str(tmp_path / "n.png")]) == 2
    assert "[model] preset must be one of ['bert-base', " in capsys.readouterr().err


def test_attention_grid_labels_the_outer_panels_only(tmp_path, monkeypatch):
    """Every panel has the same tokens, so the rows are named on the left column and the columns under
    the last panel of each column (a panel with an empty slot below it included)."""
    from qkv.viz import heatmap

    figures = []
    monkeypatch.setattr(heatmap.plt, "close", figures.append)  # keep the figure to look at it
    titles = [f"head {i}" for i in range(6)]
    path = heatmap.attention_grid(torch.rand(6, 3, 4), list("abc"), list("wxyz"), tmp_path / "g.png", "t", titles)
    assert _is_png(path)
    panels = figures[0].axes[:6]  # 2 rows of 4 slots; the last two slots are empty

    def named(labels):
        return [t.get_text() for t in labels]

    assert [i for i, ax in enumerate(panels) if ax.get_xticklabels()] == [2, 3, 4, 5]
    assert [i for i, ax in enumerate(panels) if ax.get_yticklabels()] == [0, 4]
    assert named(panels[3].get_xticklabels()) == list("wxyz") and named(panels[4].get_yticklabels()) == list("abc")
