"""Read a SentencePiece unigram model (`.spm`, as the opus-mt Marian checkpoints ship) and rebuild it as
a Hugging Face `tokenizers` tokenizer, so that qkv tokenizes like them without the `sentencepiece`
package at run time.

An `.spm` file is a protocol buffer (SentencePiece's `ModelProto`). The few fields read here are
decoded by hand: the pieces with their log-probabilities, the model type (only unigram is rebuilt),
and the normaliser: its precompiled character map (NFKC and friends, applied by `tokenizers`'
`Precompiled` normaliser as it is) and its whitespace rules.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from qkv.data.text import DataError

UNIGRAM = 1  # TrainerSpec.model_type; BPE is 2
NORMAL = 1  # SentencePiece.type of an ordinary piece (others: unknown, control, user-defined, byte)


@dataclass(frozen=True)
class SentencePieceModel:
    pieces: list[tuple[str, float, int]]  # (piece, log-probability, type), in the model's id order
    charsmap: bytes  # the normaliser's precompiled map; empty when it does not normalise
    add_dummy_prefix: bool  # a "▁" before the text, so a sentence's first word looks like the others
    remove_extra_whitespaces: bool  # strip, and squeeze runs of spaces


def _fields(data: bytes):
    """Yield (field number, value) of one protobuf message: varints as int, fixed32 as
    bytes, length-delimited fields as bytes (a nested message or a string)."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        else:
            if wire == 2:
                size, i = _varint(data, i)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire}")
            if i + size > len(data):  # a slice would silently come back short: a cut file
                raise ValueError(f"a field of {size} bytes at byte {i} runs past the end")
            value, i = data[i : i + size], i + size
        yield number, value


def _varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        result |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return result, i
        shift += 7


def read_spm(path: str | Path) -> SentencePieceModel:
    """The parts of a SentencePiece model file that tokenizing needs; DataError if it is not one."""
    path = Path(path)
    pieces, model_type, charsmap, dummy, squeeze = [], UNIGRAM, b"", True, True
    try:
        for number, value in _fields(path.read_bytes()):
            if number == 1:  # ModelProto.pieces: piece = 1, score = 2, type = 3 (default NORMAL)
                piece, score, kind = "", 0.0, NORMAL
                for n, v in _fields(value):
                    if n == 1:
                        piece = v.decode("utf-8")
                    elif n == 2:
                        score = struct.unpack("<f", v)[0]
                    elif n == 3:
                        kind = v
                pieces.append((piece, score, kind))
            elif number == 2:  # trainer_spec: model_type = 3
                model_type = next((v for n, v in _fields(value) if n == 3), UNIGRAM)
            elif number == 3:  # normalizer_spec: precompiled_charsmap = 2, add_dummy_prefix = 3, remove_... = 4
                for n, v in _fields(value):
                    if n == 2:
                        charsmap = v
                    elif n == 3:
                        dummy = bool(v)
                    elif n == 4:
                        squeeze = bool(v)
    except (IndexError, ValueError, UnicodeDecodeError, struct.error) as err:
        raise DataError(f"{path}: not a SentencePiece model ({err})") from None
    if not pieces:
        raise DataError(f"{path}: not a SentencePiece model (no pieces)")
    if model_type != UNIGRAM:
        raise DataError(f"{path}: a SentencePiece model of type {model_type}; only unigram models (opus-mt's) are read")
    if charsmap:  # checked here, where the file can be named, not when a tokenizer is built from it
        from tokenizers import normalizers

        try:
            normalizers.Precompiled(charsmap)
        except Exception as err:  # tokenizers raises a bare Exception
            raise DataError(f"{path}: not a SentencePiece model (its normaliser map: {err})") from None
    return SentencePieceModel(pieces, charsmap, dummy, squeeze)


def unigram_tokenizer(spm: SentencePieceModel, vocab: list[str], specials: list[str], unk: str):
    """A `tokenizers.Tokenizer` that segments text as `spm` does and numbers the pieces by their place
    in `vocab`, a checkpoint's own vocabulary, which also holds the pieces of the other side's model
    (opus-mt: one vocabulary, a source and a target `.spm`). Marian looks up the text of each piece
    SentencePiece gives, and for a character the model lacks that text is the character itself, which
    has an id when the other model has it. So the other side's single characters get a log-probability
    below any sentence of this model's own pieces (chosen only where this model has none), and its
    longer pieces one far below that (never chosen while the single characters can spell the text);
    all keep their text, so that every id decodes. `specials` are control tokens, never produced from
    text and left out when decoding."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    scores = {piece: score for piece, score, kind in spm.pieces if kind == NORMAL}

    def score(piece: str) -> float:
        if piece in scores or piece in specials:
            return scores.get(piece, 0.0)
        return -1e6 if len(piece) == 1 else -1e12

    table = [(piece, score(piece)) for piece in vocab]
    tok = Tokenizer(models.Unigram(table, unk_id=vocab.index(unk), byte_fallback=False))
    steps = [normalizers.Precompiled(spm.charsmap)] if spm.charsmap else []
    if spm.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    scheme = "always" if spm.add_dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme=scheme)
    tok.add_special_tokens(specials)
    return tok
