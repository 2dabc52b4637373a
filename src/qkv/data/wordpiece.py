"""WordPiece tokenizers for BERT, trained with Hugging Face `tokenizers` or read from a BERT vocab.txt.

Text is lower-cased and accents stripped (as the uncased BERT models; a vocab.txt whose
tokenizer_config.json says `do_lower_case: false` keeps its case), split on whitespace and punctuation,
then into word pieces ("##" marks a piece that continues a word).
"""

from __future__ import annotations

from pathlib import Path

from qkv.data.tokenizers import TokenizerError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class WordPieceTokenizer:
    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        ids = {s: tokenizer.token_to_id(s) for s in SPECIALS}
        missing = [s for s, i in ids.items() if i is None]
        if missing:
            raise TokenizerError(f"WordPiece vocabulary lacks {missing}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[s] for s in SPECIALS)
        self.special_ids = set(ids.values())
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts, vocab_size: int) -> "WordPieceTokenizer":
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
        tok.train_from_iterator(texts, trainer)
        # The trainer numbers its pieces differently from one process to the next (its alphabet comes
        # out of a hash set), even when it picks the same ones. Renumber: the specials, then the pieces in
        # sorted order, so that the same texts always give the same ids. WordPiece splits a word by
        # longest match against the pieces, so the ids' order does not change any tokenization.
        # (Exact ties in pair counts at the vocabulary's cutoff are broken by hash order too, and can
        # change which pieces are picked; the books at 8,000 pieces gave the same pieces in two runs.)
        pieces = sorted(set(tok.get_vocab()) - set(SPECIALS))
        tok.model = models.WordPiece({p: i for i, p in enumerate(SPECIALS + pieces)}, unk_token="[UNK]")
        return cls(tok)

    @classmethod
    def from_vocab_txt(cls, path: Path, lowercase: bool = True) -> "WordPieceTokenizer":
        from tokenizers import BertWordPieceTokenizer

        return cls(BertWordPieceTokenizer(str(path), lowercase=lowercase)._tokenizer)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids without [CLS]/[SEP] (the callers pack them)."""
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def save(self, directory: Path) -> None:
        """tokenizer.json (the whole pipeline) and vocab.txt (what BERT tools read)."""
        directory = Path(directory)
        self.tok.save(str(directory / "tokenizer.json"))
        vocab = sorted(self.tok.get_vocab().items(), key=lambda kv: kv[1])
        (directory / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> "WordPieceTokenizer":
        from tokenizers import Tokenizer

        d = Path(directory)
        try:
            if (d / "tokenizer.json").is_file():
                return cls(Tokenizer.from_file(str(d / "tokenizer.json")))
            if (d / "vocab.txt").is_file():
                return cls.from_vocab_txt(d / "vocab.txt", _lowercase(d))
        except TokenizerError:
            raise
        except Exception as err:  # the tokenizers library raises its own exception types
            raise TokenizerError(f"{d}: tokenizer cannot be read ({str(err).splitlines()[0]})") from None
        raise TokenizerError(f"{d}: no WordPiece tokenizer (tokenizer.json or vocab.txt)")


def _lowercase(directory: Path) -> bool:
    """Whether a vocab.txt's BERT lower-cases its text: `do_lower_case` in the tokenizer_config.json
    beside it (a cased model, bert-base-cased, says false), else True, the uncased models' (and
    transformers' BertTokenizer's) default."""
    import json

    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return True
    value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True)
    if not isinstance(value, bool):
        raise TokenizerError(f"{config}: do_lower_case is {value!r}, not true or false")
    return value
