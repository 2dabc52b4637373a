"""Import a Marian checkpoint with SentencePiece tokenizers, as the opus-mt translation models
(Helsinki-NLP/opus-mt-*) are published in the Hugging Face layout: config.json, model.safetensors,
vocab.json (one vocabulary for both sides), source.spm and target.spm.

Two things differ from a qkv checkpoint, and both are rearranged here, so the imported model is an
ordinary qkv encoder-decoder that computes the same function:
- Ids. qkv keeps <pad>, <s>, </s>, <unk> at 0-3 (`data.subword.SPECIALS`); Marian has </s> = 0,
  <unk> = 1 and <pad> last, and starts decoding from <pad>, whose embedding is zero. The vocabulary
  is reordered to qkv's, with one row more: <s>, a copy of <pad>, as the decoder's start. Neither row
  may be an output (`transformers` forbids <pad> with `bad_words_ids`), so their output bias is -1e4:
  never chosen, and finite, so that fine-tuning with label smoothing stays finite.
- Tokenizers. Each `.spm` is rebuilt as a `tokenizers` unigram model over the reordered vocabulary
  (`data.sentencepiece`), saved as qkv's tokenizer.src.json and tokenizer.tgt.json.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qkv.checkpoint import CheckpointError, save
from qkv.convert.common import read_json, read_tensors
from qkv.convert.marian import config_from_hf, model_from_tensors
from qkv.data.sentencepiece import read_spm, unigram_tokenizer
from qkv.data.subword import SPECIALS, PairTokenizer
from qkv.models.seq2seq import EncoderDecoder

FILES = ("source.spm", "target.spm", "vocab.json")
NEVER = -1e4  # the output bias of <pad> and <s>: far below any real logit


def is_opus_mt(hf_dir: Path) -> bool:
    return all((hf_dir / name).is_file() for name in FILES)


def reorder(vocab: dict[str, int], pad: int, eos: int, unk: int) -> tuple[list[str], list[int]]:
    """qkv's vocabulary (pieces by new id) and, for each new id, the Marian id whose rows it takes:
    <pad> and <s> both take Marian's <pad>, then </s>, <unk>, then every other piece in Marian's order."""
    by_id = sorted(vocab, key=vocab.get)
    rest = [p for p in by_id if vocab[p] not in (pad, eos, unk)]
    return SPECIALS + rest, [pad, pad, eos, unk] + [vocab[p] for p in rest]


def from_opus_mt(hf_dir: str | Path, out_dir: str | Path) -> EncoderDecoder:
    """Read an opus-mt directory into a qkv checkpoint directory (model and tokenizers)."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf = read_json(hf_dir / "config.json")
    vocab = read_json(hf_dir / "vocab.json")
    pad, eos = hf.get("pad_token_id"), hf.get("eos_token_id")
    if hf.get("decoder_start_token_id", pad) != pad or "<unk>" not in vocab:
        raise CheckpointError(f"{hf_dir}: expected decoding to start from <pad> and an <unk> in vocab.json")
    n = hf.get("vocab_size")
    if (hf_dir / "target_vocab.json").exists() or hf.get("decoder_vocab_size", n) != n:
        raise CheckpointError(
            f"{hf_dir}: separate source and target vocabularies (target_vocab.json, decoder_vocab_size) are "
            "not read here; only opus-mt models with one vocab.json"
        )
    if not isinstance(n, int) or sorted(vocab.values()) != list(range(n)):
        raise CheckpointError(f"{hf_dir / 'vocab.json'}: does not number 0 .. vocab_size - 1 ({n!r}) once each")
    pieces, take = reorder(vocab, pad, eos, vocab["<unk>"])
    weights = hf_dir / "model.safetensors"
    raw = read_tensors(weights)
    index = torch.tensor(take)
    for name in ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
        if name in raw:
            raw[name] = raw[name][index]  # (V + 1, D) rows in qkv's order
    bias = raw.get("final_logits_bias", torch.zeros(1, n))[:, index]  # (1, V + 1), a copy
    bias[0, :2] = NEVER
    raw["final_logits_bias"] = bias
    size = {"vocab_size": len(pieces), "decoder_vocab_size": len(pieces)}
    ids = {"pad_token_id": 0, "decoder_start_token_id": 1, "eos_token_id": 2}
    config = config_from_hf(hf | size | ids, hf_dir / "config.json", output_bias=True)
    model = model_from_tensors(raw, config, weights)
    src, tgt = (unigram_tokenizer(read_spm(hf_dir / f), pieces, SPECIALS, "<unk>") for f in FILES[:2])
    save(model, out_dir)
    PairTokenizer(src, tgt).save(out_dir)
    return model.eval()
