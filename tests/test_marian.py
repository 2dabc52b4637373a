"""Export to the Hugging Face Marian layout gives the same function (hidden axis permuted)."""

import pytest
import torch
from conftest import random_tokens, tiny_config

from qkv.convert.marian import to_marian
from qkv.models.seq2seq import EncoderDecoder

transformers = pytest.importorskip("transformers")


def test_marian_export_matches(tmp_path):
    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(norm_eps=1e-5)).eval()
    to_marian(model, tmp_path)
    hf = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    src, tgt = random_tokens(3, 9), random_tokens(3, 6)
    src[1, 6:] = 0
    with torch.no_grad():
        ours = model(src, tgt)
        theirs = hf(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt).logits
    assert (ours - theirs).abs().max() <= 1e-4


def test_convert_to_hf_from_the_cli(tmp_path, capsys):
    """`qkv convert --to-hf` writes an encoder-decoder as MarianMTModel (tokenizer file alongside) and
    refuses, with exit 2 and nothing written, a configuration Marian cannot express."""
    from qkv.checkpoint import save
    from qkv.cli import main

    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(norm_eps=1e-5)).eval()
    save(model, tmp_path / "ours")
    (tmp_path / "ours" / "tokenizer.json").write_text("{}")  # PairTokenizer's file, copied as it is
    assert main(["convert", "--to-hf", str(tmp_path / "ours"), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").read_text() == "{}"
    hf = transformers.MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    src, tgt = random_tokens(2, 7), random_tokens(2, 5)
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=tgt).logits
        assert (model(src, tgt) - theirs).abs().max() <= 1e-4

    save(EncoderDecoder(tiny_config(norm_placement="pre")), tmp_path / "pre")
    assert main(["convert", "--to-hf", str(tmp_path / "pre"), "--out", str(tmp_path / "no")]) == 2
    assert "only the paper's configuration" in capsys.readouterr().err and not (tmp_path / "no").exists()
