"""Text <-> ids for the language models: characters, or byte-level BPE with Hugging Face `tokenizers`.

Both kinds save themselves into a checkpoint directory and `load_tokenizer(dir)` finds whichever is
there: `chars.json` (character level), GPT-2's own `vocab.json` + `merges.txt`, or `tokenizer.json`
(a BPE trained here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator, Protocol


class TokenizerError(ValueError):
    """A tokenizer file is missing or unreadable; the message names the file."""


END_OF_TEXT = "<|endoftext|>"  # GPT-2's document separator; the BPE trained here has it too


class TextTokenizer(Protocol):
    vocab_size: int
    end_of_text: int | None  # the id of END_OF_TEXT, where the vocabulary has it

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def save(self, directory: Path) -> None: ...


class CharTokenizer:
    """One id per distinct character of the training text, in sorted order (as nanoGPT does)."""

    FILE = "chars.json"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.end_of_text = None  # characters only: no document separator

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(text)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            i = text.index(err.args[0])  # where the first unknown character is, for the message
            line, column = text.count("\n", 0, i) + 1, i - text.rfind("\n", 0, i)
            raise TokenizerError(
                f"line {line}, column {column}: character {err.args[0]!r} is not in the "
                f"{self.vocab_size}-character vocabulary"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, directory: Path) -> None:
        (Path(directory) / self.FILE).write_text(json.dumps({"chars": self.chars}, ensure_ascii=False))


class BPETokenizer:
    """Byte-level BPE (GPT-2's scheme): any Unicode text encodes, and decode(encode(s)) == s."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.end_of_text = tokenizer.token_to_id(END_OF_TEXT)

    @classmethod
    def train(cls, files: list[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer()
        tok.train(files, vocab_size=vocab_size, min_frequency=2, special_tokens=[END_OF_TEXT], show_progress=False)
        return cls(tok._tokenizer)

    @classmethod
    def from_gpt2_files(cls, vocab: Path, merges: Path) -> "BPETokenizer":
        from tokenizers import ByteLevelBPETokenizer

        return cls(ByteLevelBPETokenizer(str(vocab), str(merges))._tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids))

    def save(self, directory: Path) -> None:
        self.tok.save(str(Path(directory) / "tokenizer.json"))


def decode_stream(tokenizer: TextTokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Text of `ids` piece by piece as they arrive: "".join of the pieces is tokenizer.decode(all ids).

    Each piece decodes only the tokens since the last one shown plus the tokens before them (their
    context: a byte-level BPE token may be half of a multi-byte character), so a long stream costs
    O(n), not the O(n^2) of decoding everything again per token. A piece is held back while its text
    ends in U+FFFD, which is how an unfinished UTF-8 character decodes."""
    seen: list[int] = []
    start = shown = 0  # seen[start:shown] is the context already shown, seen[shown:] the pending tokens
    before = ""  # the text of seen[start:shown], decoded once each time the window moves
    for token in ids:
        seen.append(token)
        text = tokenizer.decode(seen[start:])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            yield text[len(before) :]
            start, shown = shown, len(seen)
            before = tokenizer.decode(seen[start:shown])
    rest = tokenizer.decode(seen[start:])[len(before) :]
    if rest:  # an unfinished character at the very end: shown as U+FFFD, as decode shows it
        yield rest


def load_tokenizer(directory: str | Path) -> TextTokenizer:
    """The tokenizer saved in a checkpoint directory."""
    d = Path(directory)
    try:
        if (d / CharTokenizer.FILE).is_file():
            return CharTokenizer(json.loads((d / CharTokenizer.FILE).read_text(encoding="utf-8"))["chars"])
        # GPT-2's files first: a Hugging Face GPT-2 directory may also hold its own tokenizer.json
        if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            return BPETokenizer.from_gpt2_files(d / "vocab.json", d / "merges.txt")
        if (d / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            return BPETokenizer(Tokenizer.from_file(str(d / "tokenizer.json")))
    except Exception as err:  # the tokenizers library raises its own exception types
        raise TokenizerError(f"{d}: tokenizer files cannot be read ({err})") from None
    raise TokenizerError(f"{d}: no tokenizer (chars.json, tokenizer.json, or vocab.json + merges.txt)")
