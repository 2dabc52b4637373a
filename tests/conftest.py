import os
import shutil

import pytest
import torch

from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig


def tiny_config(**changes) -> Seq2SeqConfig:
    base = dict(
        src_vocab_size=23,
        tgt_vocab_size=23,
        d_model=32,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=64,
        dropout=0.0,
        max_len=64,
    )
    base.update(changes)
    return Seq2SeqConfig(**base)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return EncoderDecoder(tiny_config()).eval()


def random_tokens(b: int, t: int, vocab: int = 23, low: int = 3) -> torch.Tensor:
    """Ids from `low` upwards, so no accidental pad/bos/eos."""
    return torch.randint(low, vocab, (b, t))


# qkv's compiled CPU kernels (qkv.nn.native): the first test to ask builds them unless `make setup` has.
needs_build = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler to build qkv's kernels with"
)


def native_kernel(name: str):
    from qkv.nn import native

    found = native.kernel(name)
    assert found is not None, "qkv's kernels did not build although a C++ compiler is here (see the warning)"
    return found
