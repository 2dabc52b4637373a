import json

import pytest
import torch
from conftest import random_tokens, tiny_config

import qkv
from qkv.models.seq2seq import EncoderDecoder


def test_round_trip_gives_same_logits_and_keeps_ties(tmp_path, tiny_model):
    qkv.save(tiny_model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = qkv.load(tmp_path / "ckpt")
    src, tgt = random_tokens(2, 6), random_tokens(2, 4)
    assert torch.equal(loaded(src, tgt), tiny_model(src, tgt))
    assert loaded.output.weight is loaded.src_embed.tokens.weight
    assert loaded.config == tiny_model.config


def test_untied_model_round_trips(tmp_path):
    model = EncoderDecoder(tiny_config(tgt_vocab_size=30, share_embeddings=False, tie_output=False)).eval()
    qkv.save(model, tmp_path)
    src, tgt = random_tokens(1, 5), random_tokens(1, 3)
    assert torch.equal(qkv.load(tmp_path)(src, tgt), model(src, tgt))


def test_missing_directory(tmp_path):
    with pytest.raises(qkv.CheckpointError, match="config.json: no such file"):
        qkv.load(tmp_path / "nope")


def test_a_run_directory_points_at_its_checkpoints(tmp_path, tiny_model):
    """`--model runs/x` instead of `runs/x/best` names the checkpoints inside."""
    qkv.save(tiny_model, tmp_path / "run" / "best")
    qkv.save(tiny_model, tmp_path / "run" / "last")
    run = tmp_path / "run"
    with pytest.raises(qkv.CheckpointError, match=rf"^{run}: is a training run, .*: {run / 'best'} or {run / 'last'}$"):
        qkv.load(run)


def test_config_that_does_not_match_the_weights(tmp_path, tiny_model):
    qkv.save(tiny_model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["d_ff"] = 128
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(qkv.CheckpointError, match="model.safetensors: does not match config.json"):
        qkv.load(tmp_path)


def test_truncated_weights(tmp_path, tiny_model):
    qkv.save(tiny_model, tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(qkv.CheckpointError, match="model.safetensors"):
        qkv.load(tmp_path)


def test_a_hugging_face_directory_is_told_to_be_converted(tmp_path):
    """`--model gpt2` straight after downloading GPT-2: say what to do, not which entry is missing."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 12}))
    message = rf"^{tmp_path}: is a Hugging Face checkpoint \(model_type 'gpt2'\), not a qkv one; convert it first: "
    with pytest.raises(qkv.CheckpointError, match=message + rf"qkv convert --from-hf {tmp_path} --out DIR$"):
        qkv.load(tmp_path)


def test_unknown_config_key(tmp_path, tiny_model):
    qkv.save(tiny_model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["n_layer"] = 3
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(qkv.CheckpointError, match=r"config.json: unknown key\(s\) \['n_layer'\]"):
        qkv.load(tmp_path)


def test_tampered_weights(tmp_path, tiny_model):
    qkv.save(tiny_model, tmp_path)
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[8:40] = b"\x00" * 32  # inside the JSON header
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(qkv.CheckpointError, match="model.safetensors: cannot be read as safetensors"):
        qkv.load(tmp_path)


def test_nan_weights_are_refused_at_load(tmp_path, tiny_model):
    """safetensors has no checksum: NaN read from damaged bytes (or saved by a diverged run) would
    otherwise surface much later, as NaN scores."""
    with torch.no_grad():
        tiny_model.encoder.layers[0].ff.up.weight[3, 1] = float("nan")
    qkv.save(tiny_model, tmp_path)
    with pytest.raises(qkv.CheckpointError, match=r"encoder.layers.0.ff.up.weight holds NaN or infinite values"):
        qkv.load(tmp_path)


@pytest.mark.parametrize(
    "meta, message",
    [
        ([1, 2], "not a qkv checkpoint config"),
        ("newer", r"format_version 2; this qkv reads 1 to 1 \(written by a newer qkv\?\)"),
        ("no family", "missing or unknown entry 'family'"),
    ],
)
def test_a_config_json_qkv_did_not_write(tmp_path, tiny_model, meta, message):
    qkv.save(tiny_model, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    if meta == "newer":
        meta = {**written, "format_version": 2}
    elif meta == "no family":
        meta = {k: v for k, v in written.items() if k != "family"}
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(qkv.CheckpointError, match=message):
        qkv.load(tmp_path)


def test_swapped_tokenizer_is_refused(tmp_path, capsys):
    from qkv.cli import main
    from qkv.data.subword import PairTokenizer

    lines = ["ein kleiner hund", "zwei katzen", "der hund sieht"] * 5
    small = PairTokenizer.train(lines, lines, vocab_size=30, shared=True)
    large = PairTokenizer.train(lines * 3 + ["viele andere wörter hier"], lines * 3 + ["x"], vocab_size=60, shared=True)
    model = EncoderDecoder(tiny_config(src_vocab_size=small.vocab_sizes[0], tgt_vocab_size=small.vocab_sizes[1]))
    qkv.save(model, tmp_path)
    large.save(tmp_path)  # the wrong tokenizer beside these weights
    assert main(["translate", "--model", str(tmp_path), "--input", __file__]) == 2
    err = capsys.readouterr().err
    assert "tokenizer vocabulary" in err and "does not match" in err and err.count("\n") == 1


def test_a_model_wrapped_for_training_is_saved_as_the_model_inside(tmp_path, tiny_model):
    """torch.compile's wrapper prefixes every weight name with `_orig_mod.`: saved as it was, the
    checkpoint could not be loaded back. Saved now under the model's own names."""
    src, tgt = random_tokens(2, 5), random_tokens(2, 4)
    back = qkv.load(qkv.save(torch.compile(tiny_model), tmp_path / "m"))
    assert torch.equal(back(src, tgt), tiny_model(src, tgt))


def test_save_and_load_refuse_what_they_cannot_do_by_name(tmp_path, tiny_model):
    with pytest.raises(TypeError, match="qkv.save writes qkv models .*, not Linear"):
        qkv.save(torch.nn.Linear(2, 2), tmp_path / "linear")
    assert not (tmp_path / "linear").exists()
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(qkv.CheckpointError, match="file: exists and is not a directory"):
        qkv.save(tiny_model, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "keep me"
    qkv.save(tiny_model, tmp_path / "m")
    # a device torch cannot use is named as such; it used to be blamed on the weights file
    with pytest.raises(ValueError, match="device 'tpu': not a device torch knows"):
        qkv.load(tmp_path / "m", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': torch sees no CUDA device"):
            qkv.load(tmp_path / "m", device="cuda")
