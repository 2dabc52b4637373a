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
