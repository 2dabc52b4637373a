"""qkv tokenize: the tokens a checkpoint's tokenizer makes of a text (what the model actually reads)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qkv.commands import UsageError, encode_text, visible


def tokens(model_dir: Path, text: str, side: str | None = None) -> list[tuple[int, str]]:
    """(id, token) pairs of `text` under the tokenizer saved with the checkpoint `model_dir`; side:
    an encoder-decoder's "source" (the default) or "target" tokenizer."""
    from qkv.checkpoint import read_config

    family, _ = read_config(model_dir)
    if side is not None and family != "seq2seq":
        raise UsageError(f"--side {side}: a {family} model has one tokenizer (--side chooses an encoder-decoder's)")
    if family == "gpt":  # characters or byte-level BPE; a token's text may be part of a character
        from qkv.data.tokenizers import load_tokenizer

        tok = load_tokenizer(model_dir)
        return [(i, tok.decode([i])) for i in encode_text(tok, text, "--text")]
    if family == "bert":
        from qkv.data.wordpiece import WordPieceTokenizer

        enc = WordPieceTokenizer.load(model_dir).tok.encode(text, add_special_tokens=False)
        return list(zip(enc.ids, enc.tokens))
    from qkv.data.vocab import saved_word_vocab, words_of

    vocab = saved_word_vocab(model_dir)
    if vocab is not None:  # the demo's words; one it lacks shows as <unk>
        return [(i, vocab.itos[i]) for i in vocab.encode(words_of(text))]
    from qkv.data.subword import PairTokenizer

    pair = PairTokenizer.load(model_dir)
    enc = (pair.tgt if side == "target" else pair.src).encode(text)
    return list(zip(enc.ids, enc.tokens))


def cmd_tokenize(args: argparse.Namespace) -> int:
    if not args.text:
        raise UsageError("--text is empty: give the text to tokenize")
    pairs = tokens(Path(args.model), args.text, args.side)
    print(f"{len(pairs)} tokens for {len(args.text)} characters")
    print(" ".join(f"{visible(token)}[{i}]" for i, token in pairs))
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "tokenize",
        help="show the tokens (and ids) a checkpoint's tokenizer makes of a text",
        description="Print how the tokenizer saved with a checkpoint splits --text: the token count, then "
        "each token with its id in brackets (a space shows as \u2423). GPT: characters or byte-level BPE "
        "(a token's text may be part of a multi-byte character); BERT: WordPiece, without [CLS]/[SEP]; "
        "encoder-decoder: the source or target BPE (--side).",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (with its tokenizer)")
    p.add_argument("--text", required=True, help="the text to tokenize")
    p.add_argument("--side", choices=["source", "target"], help="encoder-decoder: which tokenizer (default source)")
    p.set_defaults(handler=cmd_tokenize)
