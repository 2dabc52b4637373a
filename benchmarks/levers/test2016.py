"""The decoding levers' shared input: the trained Multi30k model and the first test2016 sources in
padded batches of similar length, as `translate_lines` batches them (sorted by length, EOS appended)."""

from __future__ import annotations

from torch import Tensor

from qkv.checkpoint import load
from qkv.data.padding import pad_sequences
from qkv.data.subword import PairTokenizer
from qkv.models.seq2seq import EncoderDecoder


def model_and_batches(
    model_dir: str, src: str, sentences: int = 512, size: int = 64
) -> tuple[EncoderDecoder, list[Tensor]]:
    """-> the model in evaluation mode, and (size, S) id batches of the first `sentences` lines of `src`."""
    model = load(model_dir).eval()
    ids = PairTokenizer.load(model_dir).encode_src(open(src, encoding="utf-8").read().splitlines()[:sentences])
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    c = model.config
    return model, [
        pad_sequences([ids[i] + [c.eos_id] for i in order[j : j + size]], c.pad_id) for j in range(0, len(ids), size)
    ]
