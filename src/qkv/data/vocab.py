"""A plain list-of-symbols vocabulary, for the demo and for character-level models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3, matching the configs' pad/bos/eos defaults


class Vocab:
    """Maps symbols to ids and back. Ids 0-3 are <pad>, <s>, </s>, <unk>."""

    def __init__(self, symbols: Iterable[str]) -> None:
        self.itos = list(SPECIALS) + [s for s in dict.fromkeys(symbols) if s not in SPECIALS]
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, symbols: Sequence[str], bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self.stoi.get(s, self.unk_id) for s in symbols]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols up to the first </s>, without specials."""
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"symbols": self.itos[len(SPECIALS) :]}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["symbols"])


def saved_word_vocab(directory: str | Path) -> Vocab | None:
    """The word-level vocabulary an encoder-decoder checkpoint saved (the demo's `vocab.json`), or None
    when the checkpoint's tokenizer is a BPE one (a `vocab.json` of another shape, or none)."""
    file = Path(directory) / "vocab.json"
    if file.is_file() and "symbols" in json.loads(file.read_text(encoding="utf-8")):
        return Vocab.load(file)
    return None


def words_of(text: str) -> list[str]:
    """The demo's tokenization: words split at spaces and hyphens ("twenty-first" -> twenty, first)."""
    return text.replace("-", " ").split()


class WordTranslatorTokenizer:
    """The demo's tokenization behind a translator tokenizer's interface (`PairTokenizer`'s
    encode_src, decode_tgt and vocab_sizes), so that `qkv translate` and `evaluate` read the demo's
    model: words in (`words_of`), the date's characters out, one shared vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.vocab_sizes = (len(vocab), len(vocab))

    def encode_src(self, lines: list[str]) -> list[list[int]]:
        return [self.vocab.encode(words_of(line)) for line in lines]

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return ["".join(self.vocab.decode(row)) for row in ids]
