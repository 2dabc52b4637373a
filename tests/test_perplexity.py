"""Scoring a text with a GPT: every token once, with the context its window gives, batched or not."""

import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

import qkv
from qkv.cli import main
from qkv.data.tokenizers import CharTokenizer
from qkv.models.gpt import GPT, GPTConfig
from qkv.tasks.perplexity import score, windows

TEXT = "the quick brown fox jumps over the lazy dog. " * 3


def tiny(block: int = 8) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=30, block_size=block, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0)
    return GPT(cfg).eval()


@torch.no_grad()
def one_by_one(model: GPT, ids: list[int], stride: int) -> float:
    """The definition, one forward per token: target j is predicted from ids[start:j] of the window
    that scores it (`windows`), with no batching or masking of columns."""
    total = 0.0
    for start, end, first in windows(len(ids), model.config.block_size, stride):
        for j in range(first, end):
            logits = model(torch.tensor([ids[start:j]])).logits[0, -1]
            total -= float(logits.log_softmax(-1)[ids[j]])
    return total


def test_windows_score_every_token_once_with_at_least_the_promised_context():
    for n, block, stride in [(5, 8, 4), (9, 8, 8), (30, 8, 1), (30, 8, 3), (31, 8, 8), (100, 16, 5)]:
        spans = windows(n, block, stride)
        scored = [j for _, end, first in spans for j in range(first, end)]
        assert scored == list(range(1, n))
        for start, end, first in spans:
            assert end - start <= block + 1  # at most a context window of inputs, plus the last target
            assert start == 0 or first - start >= block + 1 - stride


@pytest.mark.parametrize("stride", [1, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_score_equals_the_definition_token_by_token(stride, batch_size):
    model = tiny()
    ids = torch.randint(0, 30, (37,), generator=torch.Generator().manual_seed(1)).tolist()
    got = score(model, ids, stride, batch_size)
    assert got.tokens == 36
    assert got.nll == pytest.approx(one_by_one(model, ids, stride), rel=1e-5)


def test_a_text_that_fits_one_window_is_the_plain_cross_entropy():
    model = tiny(block=64)
    ids = torch.randint(0, 30, (40,), generator=torch.Generator().manual_seed(2)).tolist()
    x = torch.tensor([ids])
    expected = F.cross_entropy(model(x[:, :-1]).logits[0], x[0, 1:]).item()
    got = score(model, ids, stride=32)
    assert got.loss == pytest.approx(expected, rel=1e-5) and got.perplexity == pytest.approx(math.exp(expected))
    with pytest.raises(ValueError, match="nothing to predict"):
        score(model, ids[:1], stride=32)


def test_cli_perplexity(tmp_path, capsys, monkeypatch):
    tok = CharTokenizer.train(TEXT)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, d_model=16, n_heads=2, n_layers=1, d_ff=32))
    qkv.save(model, tmp_path / "m")
    tok.save(tmp_path / "m")
    (tmp_path / "t.txt").write_text(TEXT)
    argv = ["perplexity", "--model", str(tmp_path / "m"), "--file", str(tmp_path / "t.txt"), "--no-progress"]
    assert main([*argv, "--stride", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = score(qkv.load(tmp_path / "m").eval(), tok.encode(TEXT), 4)
    assert out["tokens"] == len(TEXT) - 1 and out["stride"] == 4 and out["min_context"] == 13
    assert out["loss"] == pytest.approx(expected.loss, abs=1e-4)
    assert out["bits_per_character"] == pytest.approx(expected.nll / math.log(2) / (len(TEXT) - 1), abs=1e-4)
    # --input, the name the other commands use for their input file, is the same option
    assert main([*argv[:3], "--input", str(tmp_path / "t.txt"), "--no-progress", "--stride", "4"]) == 0
    assert json.loads(capsys.readouterr().out) == out
    # "-" reads the text from standard input
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode())))
    assert main([*argv[:3], "--file", "-", "--no-progress", "--stride", "4"]) == 0
    assert json.loads(capsys.readouterr().out) == {**out, "file": "<stdin>"}
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"the \xff")))
    assert main([*argv[:3], "--file", "-"]) == 2
    assert "<stdin>: invalid UTF-8 at byte 4" in capsys.readouterr().err
    assert main([*argv, "--stride", "17"]) == 2
    assert "--stride 17: at most the context window, block_size = 16" in capsys.readouterr().err
    (tmp_path / "z.txt").write_text("the Quick")  # 'Q' is not in the vocabulary
    assert main([*argv[:3], "--file", str(tmp_path / "z.txt")]) == 2
    assert f"{tmp_path / 'z.txt'}: line 1, column 5: character 'Q' is not in the" in capsys.readouterr().err
