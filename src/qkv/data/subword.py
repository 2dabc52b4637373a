"""Subword (BPE) tokenizers for translation, trained with Hugging Face `tokenizers`.

Words are split on whitespace with the space kept as a visible marker at the start of each word
(the "Metaspace" scheme of SentencePiece), so decoding restores the original spacing exactly and
detokenized output can be scored with sacreBLEU directly. Special ids 0-3 are <pad>, <s>, </s>,
<unk>, matching `Seq2SeqConfig`'s defaults. One vocabulary serves both languages by default
(sec 3.4 shares the embedding matrices); separate vocabularies are an option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from qkv.data.tokenizers import TokenizerError

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_bpe(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


class PairTokenizer:
    """Source and target tokenizers (the same object when the vocabulary is shared)."""

    def __init__(self, src, tgt) -> None:
        self.src, self.tgt = src, tgt
        self.shared = src is tgt
        for t in {id(src): src, id(tgt): tgt}.values():
            if [t.token_to_id(s) for s in SPECIALS] != [0, 1, 2, 3]:
                raise TokenizerError(f"tokenizer must give {SPECIALS} the ids 0-3")

    @classmethod
    def train(cls, src_texts: list[str], tgt_texts: list[str], vocab_size: int, shared: bool) -> "PairTokenizer":
        if shared:
            tok = train_bpe(src_texts + tgt_texts, vocab_size)
            return cls(tok, tok)
        return cls(train_bpe(src_texts, vocab_size), train_bpe(tgt_texts, vocab_size))

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.src.encode_batch(texts)]

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tgt.encode_batch(texts)]

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode_batch(ids, skip_special_tokens=True)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        if self.shared:
            self.src.save(str(directory / "tokenizer.json"))
        else:
            self.src.save(str(directory / "tokenizer.src.json"))
            self.tgt.save(str(directory / "tokenizer.tgt.json"))

    @classmethod
    def load(cls, directory: str | Path) -> "PairTokenizer":
        from tokenizers import Tokenizer

        d = Path(directory)
        try:
            if (d / "tokenizer.json").is_file():
                tok = Tokenizer.from_file(str(d / "tokenizer.json"))
                return cls(tok, tok)
            if (d / "tokenizer.src.json").is_file() and (d / "tokenizer.tgt.json").is_file():
                return cls(
                    Tokenizer.from_file(str(d / "tokenizer.src.json")),
                    Tokenizer.from_file(str(d / "tokenizer.tgt.json")),
                )
        except Exception as err:  # the tokenizers library raises its own exception types
            raise TokenizerError(f"{d}: tokenizer cannot be read ({str(err).splitlines()[0]})") from None
        raise TokenizerError(
            f"{d}: no translation tokenizer (tokenizer.json, or tokenizer.src.json + tokenizer.tgt.json)"
        )

    @property
    def vocab_sizes(self) -> tuple[int, int]:
        return self.src.get_vocab_size(), self.tgt.get_vocab_size()
