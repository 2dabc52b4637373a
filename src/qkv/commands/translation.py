"""qkv translate / evaluate / average: using and scoring encoder-decoder translators."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qkv.commands import (
    UsageError,
    add_device_option,
    at_least,
    in_range,
    input_lines,
    input_name,
    lines_named,
    load_model,
    not_an_input,
    refuse_nonempty,
    writable,
)
from qkv.data.parallel import read_lines


def _load_translator(path: str, device: str):
    from qkv.data.subword import PairTokenizer
    from qkv.data.vocab import WordTranslatorTokenizer, saved_word_vocab

    model = load_model(path, device)
    if model.family != "seq2seq":
        raise UsageError(f"{path}: is a {model.family} model; translation needs an encoder-decoder")
    words = saved_word_vocab(path)  # the demo's model
    tokenizer = WordTranslatorTokenizer(words) if words is not None else PairTokenizer.load(path)
    if tokenizer.vocab_sizes != (model.config.src_vocab_size, model.config.tgt_vocab_size):
        raise UsageError(
            f"{path}: tokenizer vocabulary {tokenizer.vocab_sizes} does not match the model's "
            f"{(model.config.src_vocab_size, model.config.tgt_vocab_size)}"
        )
    return model, tokenizer


def note_long(command: str, source: str, longest: int | None, line_numbers: list[int]) -> None:
    """One line on stderr when inputs were longer than any training sentence (`longest_trained_source`):
    their translations may cover only part of them, which the user should know."""
    if line_numbers:
        many = len(line_numbers) > 1
        print(
            f"qkv {command}: note: {lines_named(source, line_numbers)} {'are' if many else 'is'} longer than any "
            f"sentence the model was trained on ({longest} tokens): the translation may cover only part of "
            f"{'them' if many else 'it'}; give one sentence a line",
            file=sys.stderr,
        )


def length_penalty(args: argparse.Namespace, command: str) -> float:
    """--alpha, 0.6 (the paper's) when not given; greedy decoding (--beam 1) ranks nothing by length,
    so an --alpha given with it gets a note that it changes nothing."""
    if args.alpha is not None and args.beam == 1:
        print(f"qkv {command}: note: --beam 1 is greedy, so --alpha changes nothing", file=sys.stderr)
    return 0.6 if args.alpha is None else args.alpha


def cmd_translate(args: argparse.Namespace) -> int:
    from qkv.decoding.translate import longest_trained_source, translate_lines

    alpha = length_penalty(args, "translate")
    model, tokenizer = _load_translator(args.model, args.device)
    lines = input_lines(args.input)
    progress = not args.no_progress and len(lines) > args.batch_size  # a bar (on stderr) when there is a wait
    where, longest, long_lines = input_name(args.input), longest_trained_source(args.model), []
    options = dict(source=where, longest=longest, long_lines=long_lines)
    for line in translate_lines(model, tokenizer, lines, args.beam, alpha, args.batch_size, progress, **options):
        print(line)
    note_long("translate", where, longest, long_lines)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import time

    import sacrebleu

    from qkv.decoding.translate import longest_trained_source, translate_lines

    alpha = length_penalty(args, "evaluate")
    if args.output:  # checked now, not after minutes of decoding
        writable(Path(args.output), "file", "--output")
        not_an_input(Path(args.output), "--output", {"--src": args.src, "--ref": args.ref})
    model, tokenizer = _load_translator(args.model, args.device)
    src, ref = read_lines(args.src), read_lines(args.ref)
    if len(src) != len(ref):
        raise UsageError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
    start, longest, long_lines = time.perf_counter(), longest_trained_source(args.model), []
    options = dict(source=args.src, longest=longest, long_lines=long_lines)
    hyps = translate_lines(model, tokenizer, src, args.beam, alpha, args.batch_size, not args.no_progress, **options)
    seconds = time.perf_counter() - start
    note_long("evaluate", args.src, longest, long_lines)
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    lower = sacrebleu.metrics.BLEU(lowercase=True)
    b, c, lo = bleu.corpus_score(hyps, [ref]), chrf.corpus_score(hyps, [ref]), lower.corpus_score(hyps, [ref])
    print(f"{b}  signature: {bleu.get_signature()}")
    print(f"{c}  signature: {chrf.get_signature()}")
    print(f"{lo}  signature: {lower.get_signature()}")
    print(f"decoded {len(src)} sentences in {seconds:.1f} s ({len(src) / seconds:.1f} sentences/s), beam {args.beam}")
    if args.output:
        Path(args.output).write_text("\n".join(hyps) + "\n", encoding="utf-8")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from qkv.train.average import average_checkpoints

    out = writable(Path(args.out), "directory", "--out")
    dirs = list(args.checkpoints)
    if args.run:
        found = sorted((Path(args.run) / "checkpoints").glob("step-*"))
        if not found:
            raise UsageError(f"{args.run}/checkpoints: no step checkpoints (set train.keep_checkpoints)")
        dirs += found[-args.last :]
    not_an_input(out, "--out", {f"checkpoint {i + 1}": d for i, d in enumerate(dirs)})
    refuse_nonempty(out, args.overwrite)
    if len({Path(d).resolve() for d in dirs}) < len(dirs):
        raise UsageError("a checkpoint is named twice: " + ", ".join(str(d) for d in dirs))
    if len(dirs) == 1:  # the mean of one is a copy: most likely a run that kept fewer checkpoints than meant
        raise UsageError(f"only one checkpoint ({dirs[0]}): averaging needs two or more")
    average_checkpoints(dirs, out)
    print(f"averaged {len(dirs)} checkpoints into {out}: " + ", ".join(Path(d).name for d in dirs))
    return 0


def add_parsers(sub) -> None:
    tr = sub.add_parser(
        "translate",
        help="translate sentences with an encoder-decoder checkpoint",
        description="Read source sentences (one a line) from standard input or --input, write their "
        "translations to standard output, one a line, in the same order.",
    )
    tr.add_argument("--model", required=True, help="checkpoint directory (with its tokenizer)")
    tr.add_argument("--input", help="file of source sentences (default, or -: standard input)")
    ev = sub.add_parser(
        "evaluate",
        help="translate a test set and score it with sacreBLEU (BLEU, chrF)",
        description="Translate --src and score against --ref with sacreBLEU: BLEU (default settings: "
        "cased, 13a tokenization) with its signature, chrF, and lowercased BLEU for comparison with "
        "tutorials that report it.",
    )
    ev.add_argument("--model", required=True, help="checkpoint directory")
    ev.add_argument("--src", required=True, help="source sentences, one a line")
    ev.add_argument("--ref", required=True, help="reference translations, one a line")
    ev.add_argument("--output", help="also write the translations to this file")
    for p in (tr, ev):
        p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to standard error)")
        p.add_argument("--beam", type=at_least(1), default=4, help="beam size; 1 is greedy (default 4, as the paper)")
        p.add_argument(
            "--alpha",
            type=in_range(0.0, 10.0),
            help="length penalty alpha in [0, 10]: 0 ranks by total log-probability, larger favours longer "
            "translations (default 0.6, as the paper)",
        )
        p.add_argument("--batch-size", type=at_least(1), default=64, help="sentences decoded together (default 64)")
        add_device_option(p)
    tr.set_defaults(handler=cmd_translate)
    ev.set_defaults(handler=cmd_evaluate)

    avg = sub.add_parser(
        "average",
        help="average the weights of several checkpoints of one run",
        description="Average checkpoints (sec 6.1). Name them, or give --run and --last N to take the "
        "last N of RUN/checkpoints/ (written when train.keep_checkpoints is set).",
    )
    avg.add_argument("checkpoints", nargs="*", help="checkpoint directories")
    avg.add_argument("--run", help="a training output directory")
    avg.add_argument("--last", type=at_least(2), default=5, help="with --run: how many of the last (default 5)")
    avg.add_argument("--out", required=True, help="directory for the averaged checkpoint")
    avg.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    avg.set_defaults(handler=cmd_average)
