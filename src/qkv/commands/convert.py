"""qkv convert: Hugging Face checkpoints to and from qkv."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from qkv.commands import UsageError, not_an_input, refuse_nonempty


def cmd_convert(args: argparse.Namespace) -> int:
    from qkv.checkpoint import load
    from qkv.convert import bert, gpt2, marian
    from qkv.convert.common import read_json

    by_model_type, by_family = (
        {"gpt2": gpt2, "bert": bert, "marian": marian},
        {"gpt": gpt2, "bert": bert, "seq2seq": marian},
    )
    out = Path(args.out)
    not_an_input(out, "--out", {"--from-hf": args.from_hf, "--to-hf": args.to_hf})
    refuse_nonempty(out, args.overwrite)
    if args.from_hf:
        src = Path(args.from_hf)
        model_type = read_json(src / "config.json").get("model_type")
        if model_type not in by_model_type:
            raise UsageError(
                f"{src / 'config.json'}: model_type {model_type!r} is not supported ({sorted(by_model_type)})"
            )
        with warnings.catch_warnings(record=True) as caught:  # one line each, not Python's warning format
            warnings.simplefilter("always")
            model = by_model_type[model_type].from_hf(src, out)
        for w in caught:
            note(str(w.message))
        from qkv.data.subword import PairTokenizer
        from qkv.data.tokenizers import TokenizerError, load_tokenizer
        from qkv.data.wordpiece import WordPieceTokenizer

        try:  # the loader the model's users will call: say now, not at their first command, if it fails
            {"gpt2": load_tokenizer, "bert": WordPieceTokenizer.load, "marian": PairTokenizer.load}[model_type](out)
        except TokenizerError as err:
            note(f"{err}; {src} brought none, so {out} holds the weights only")
    else:
        model = load(args.to_hf)
        if model.family not in by_family:
            raise UsageError(f"{args.to_hf}: a {model.family} model has no Hugging Face layout here")
        family = by_family[model.family]
        family.to_hf(model, out, tokenizer_dir=args.to_hf)
        if not any((out / name).is_file() for name in family.TOKENIZER_FILES):
            files = ", ".join(family.TOKENIZER_FILES)
            note(
                f"{args.to_hf} has no tokenizer file the Hugging Face layout takes ({files}),"
                f" so {out} holds the model only"
            )
        if model.family == "seq2seq" and model.config.norm_eps != 1e-5:
            note(
                f"Marian's LayerNorm eps is fixed at 1e-5, this model's is {model.config.norm_eps:g}:"
                " its logits there differ slightly"
            )
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


def note(text: str) -> None:
    """One line on standard error, named like every command's notes."""
    print(f"qkv convert: note: {text}", file=sys.stderr)


def add_parsers(sub) -> None:
    conv = sub.add_parser(
        "convert",
        help="convert checkpoints from/to the Hugging Face layout (GPT-2, BERT, Marian)",
        description="--from-hf reads a Hugging Face GPT-2 or BERT directory (config.json, model.safetensors, "
        "tokenizer files), or a Marian one: one that --to-hf wrote (qkv's tokenizer files beside it) or an opus-mt one "
        "(source.spm, target.spm, vocab.json), into a qkv checkpoint; --to-hf writes a qkv checkpoint in the "
        "Hugging Face layout "
        "(GPT2LMHeadModel, BERT, or MarianMTModel for an encoder-decoder with the paper's configuration). "
        "Only safetensors weights are read, never pickled ones.",
    )
    which = conv.add_mutually_exclusive_group(required=True)
    which.add_argument("--from-hf", metavar="HF_DIR", help="Hugging Face model directory to read")
    which.add_argument("--to-hf", metavar="DIR", help="qkv checkpoint directory to write out")
    conv.add_argument("--out", required=True, help="directory to write")
    conv.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    conv.set_defaults(handler=cmd_convert)
