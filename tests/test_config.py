import pytest

from qkv.config import ConfigError
from qkv.models.seq2seq import PRESETS, Seq2SeqConfig
from qkv.train.optim import PAPER_BASE_OPTIM, OptimConfig


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['d_modle'\]"):
        Seq2SeqConfig.from_dict({"src_vocab_size": 10, "tgt_vocab_size": 10, "d_modle": 64}, source="x.toml")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"d_model": "512"}, "expected int"),
        ({"d_model": 30, "n_heads": 8}, "not divisible"),
        ({"norm_placement": "middle"}, "not one of"),
        ({"activation": "swish"}, "not one of"),
        ({"dropout": 1.5}, "dropout"),
        ({"share_embeddings": 1}, "expected bool"),
        ({"tgt_vocab_size": 11}, "share_embeddings needs"),
    ],
)
def test_bad_values_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        Seq2SeqConfig(**{"src_vocab_size": 10, "tgt_vocab_size": 10, **changes})


def test_configs_are_frozen_and_round_trip():
    c = Seq2SeqConfig(10, 10, dropout=0)  # an int where a float is expected is converted losslessly
    assert isinstance(c.dropout, float)
    with pytest.raises(AttributeError):
        c.d_model = 3  # type: ignore[misc]
    assert Seq2SeqConfig.from_dict(c.to_dict()) == c


def test_paper_base_preset():
    c = PRESETS["base"]
    assert (c.n_encoder_layers, c.n_decoder_layers, c.d_model, c.d_ff, c.n_heads, c.dropout) == (
        6,
        6,
        512,
        2048,
        8,
        0.1,
    )
    assert c.norm_placement == "post" and c.positions == "sinusoidal" and c.activation == "relu"
    o = PAPER_BASE_OPTIM
    assert (o.label_smoothing, o.warmup_steps, o.beta1, o.beta2, o.eps) == (0.1, 4000, 0.9, 0.98, 1e-9)
    assert PRESETS["small"].d_model == 256
    assert OptimConfig.from_dict({"schedule": "cosine"}).schedule == "cosine"


def test_one_value_where_a_list_goes_shows_the_list():
    """`files = "my.txt"` (or `--set data.files=my.txt`) for a list of files: the error writes the
    list it would be."""
    from qkv.tasks.lm import LMDataConfig

    one = r"""expected a list, got 'my.txt' \(a list of one is written \["my.txt"\]\)"""
    with pytest.raises(ConfigError, match=one):
        LMDataConfig.from_dict({"files": "my.txt"}, source="run.toml")
    assert LMDataConfig.from_dict({"files": ["my.txt"]}, source="run.toml").files == ("my.txt",)
