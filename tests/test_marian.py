"""Export to the Hugging Face Marian layout gives the same function (hidden axis permuted), and reads back."""

import shutil

import pytest
import torch
from conftest import random_tokens, tiny_config

from qkv.checkpoint import load
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
    says so when no tokenizer goes with it, and refuses, with exit 2 and nothing written, a configuration
    Marian cannot express."""
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

    assert "note:" not in capsys.readouterr().err
    save(model, tmp_path / "bare")  # no tokenizer beside it (the demo's word vocabulary is no such file)
    (tmp_path / "bare" / "vocab.json").write_text("{}")
    assert main(["convert", "--to-hf", str(tmp_path / "bare"), "--out", str(tmp_path / "hf2")]) == 0
    err = capsys.readouterr().err
    assert "has no tokenizer file the Hugging Face layout takes" in err and err.count("\n") == 1
    assert (tmp_path / "hf2" / "model.safetensors").is_file()

    save(EncoderDecoder(tiny_config(norm_placement="pre")), tmp_path / "pre")
    assert main(["convert", "--to-hf", str(tmp_path / "pre"), "--out", str(tmp_path / "no")]) == 2
    assert "only the paper's configuration" in capsys.readouterr().err and not (tmp_path / "no").exists()


def test_marian_round_trip_through_transformers(tmp_path, capsys):
    """--to-hf, then `transformers` loads and saves it again (its own layout), then --from-hf: the same
    model, weights back in qkv's order, and the tokenizer file with it."""
    from qkv.checkpoint import load, save
    from qkv.cli import main
    from qkv.data.subword import PairTokenizer

    torch.manual_seed(0)
    sentences = ["ein hund läuft", "zwei männer stehen", "a dog runs", "two men stand"] * 5
    tokenizer = PairTokenizer.train(sentences, sentences, 40, shared=True)
    model = EncoderDecoder(tiny_config(norm_eps=1e-5, dropout=0.1, src_vocab_size=40, tgt_vocab_size=40)).eval()
    save(model, tmp_path / "ours")
    tokenizer.save(tmp_path / "ours")
    assert main(["convert", "--to-hf", str(tmp_path / "ours"), "--out", str(tmp_path / "hf")]) == 0
    transformers.MarianMTModel.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "resaved")
    (tmp_path / "resaved" / "tokenizer.json").write_bytes((tmp_path / "hf" / "tokenizer.json").read_bytes())
    assert main(["convert", "--from-hf", str(tmp_path / "resaved"), "--out", str(tmp_path / "back")]) == 0
    back = load(tmp_path / "back")
    assert back.config == model.config.replace(max_len=1024)  # Marian's table size (sinusoids: no weights)
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name  # a permutation and its inverse: exact
    assert PairTokenizer.load(tmp_path / "back").encode_src(["a dog runs"]) == tokenizer.encode_src(["a dog runs"])
    assert "note:" not in capsys.readouterr().err
    shutil.rmtree(tmp_path / "back")
    (tmp_path / "resaved" / "tokenizer.json").unlink()  # transformers' save_pretrained does not carry it
    assert main(["convert", "--from-hf", str(tmp_path / "resaved"), "--out", str(tmp_path / "back")]) == 0
    assert "holds the weights only" in capsys.readouterr().err


def test_marian_from_hf_refuses_what_qkv_cannot_express(tmp_path, capsys):
    import json

    from safetensors.torch import load_file, save_file

    from qkv.cli import main

    torch.manual_seed(0)
    to_marian(EncoderDecoder(tiny_config(norm_eps=1e-5)).eval(), tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg | {"activation_function": "gelu"}))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "a")]) == 2
    assert "activation_function = 'gelu' has no counterpart here" in capsys.readouterr().err
    del cfg["scale_embedding"]  # absent: MarianConfig's default, False, which qkv's sec 3.4 scaling is not
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "b")]) == 2
    assert "scale_embedding = " in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # Marian's defaults for the rest; an output bias (opus-mt models carry one) is kept
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg | {"scale_embedding": True}))
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    weights["final_logits_bias"][0, 3] = 1.0
    save_file(weights, tmp_path / "hf" / "model.safetensors")
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "c")]) == 0
    assert load(tmp_path / "c").output.bias[3] == 1.0
