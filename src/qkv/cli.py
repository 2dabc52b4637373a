"""The `qkv` command line. Each subcommand parses its arguments here and calls library functions.

Errors a user can fix (bad input, bad config, damaged checkpoint) print one line and exit with
status 2; nothing on disk is changed by a command that fails that way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qkv.checkpoint import CheckpointError
from qkv.config import ConfigError
from qkv.data.text import DataError
from qkv.data.tokenizers import TokenizerError

DEMO_MARKER = ".qkv-demo"


class UsageError(Exception):
    """A problem with the user's input; reported in one line with exit status 2."""


def _demo(args: argparse.Namespace) -> int:
    from qkv.demo.run import DemoConfig, run_demo

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / DEMO_MARKER).exists() and not args.overwrite:
        raise UsageError(f"{out}: exists and holds something other than a demo run (use --overwrite or another --out)")
    overrides = {k: v for k, v in {"steps": args.steps, "seed": args.seed}.items() if v is not None}
    cfg = DemoConfig.from_dict(overrides, source="command line")
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("written by `qkv demo`; a later demo may replace this directory's contents\n")
    result = run_demo(out, cfg, progress=not args.no_progress)
    return 0 if result["accuracy"] >= args.min_accuracy else 1


def _train(args: argparse.Namespace) -> int:
    import json

    import torch

    from qkv.tasks.registry import TASKS
    from qkv.train.loop import LoopConfig, fit
    from qkv.train.optim import OptimConfig
    from qkv.train.runconfig import load_run_config

    run = load_run_config(args.config, args.set)
    source = run["_source"]
    if run["task"] not in TASKS:
        raise UsageError(f"{source}: task must be one of {sorted(TASKS)}, got {run['task']!r}")
    loop = LoopConfig.from_dict(run["train"], source=f"{source} [train]")
    optim = OptimConfig.from_dict(run["optim"], source=f"{source} [optim]")
    out = Path(run["out"])
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"{out}: already holds a run (use --overwrite to replace it, or set another `out`)")
    if loop.threads:
        torch.set_num_threads(loop.threads)
    model, task = TASKS[run["task"]](run, loop)  # reads and checks the data before anything is written
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    resolved = {k: v for k, v in run.items() if k != "_source"} | {"model": model.config.to_dict()}
    (out / "run_config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{run['task']}: {model.family} model with {n_params:,} parameters; writing to {out}", file=sys.stderr)
    result = fit(model, task, loop, optim, out, progress=not args.no_progress)
    print(json.dumps(result))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch

    from qkv.checkpoint import load
    from qkv.data.tokenizers import load_tokenizer
    from qkv.decoding.generate import generate

    model = load(args.model)
    if model.family != "gpt":
        raise UsageError(f"{args.model}: is a {model.family} model; generate needs a gpt model")
    tokenizer = load_tokenizer(args.model)
    prompt = tokenizer.encode(args.prompt)
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    ids: list[int] = []
    shown = ""
    sys.stdout.write(args.prompt)
    for token in generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, generator):
        ids.append(token)
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            sys.stdout.write(text[len(shown) :])
            sys.stdout.flush()
            shown = text
    sys.stdout.write(tokenizer.decode(ids)[len(shown) :] + "\n")
    return 0


def _refuse_nonempty(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out}: already exists and is not empty (use --overwrite, or another --out)")


def _convert(args: argparse.Namespace) -> int:
    from qkv.checkpoint import load
    from qkv.convert import gpt2
    from qkv.convert.common import read_json

    out = Path(args.out)
    _refuse_nonempty(out, args.overwrite)
    if args.from_hf:
        src = Path(args.from_hf)
        model_type = read_json(src / "config.json").get("model_type")
        if model_type != "gpt2":
            raise UsageError(f"{src / 'config.json'}: model_type {model_type!r} is not supported (supported: gpt2)")
        model = gpt2.from_hf(src, out)
    else:
        model = load(args.to_hf)
        if model.family != "gpt":
            raise UsageError(f"{args.to_hf}: a {model.family} model has no Hugging Face layout here (supported: gpt)")
        gpt2.to_hf(model, out, tokenizer_dir=args.to_hf)
    print(f"wrote {out} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


def _load_translator(path: str):
    from qkv.checkpoint import load
    from qkv.data.subword import PairTokenizer

    model = load(path)
    if model.family != "seq2seq":
        raise UsageError(f"{path}: is a {model.family} model; translation needs an encoder-decoder")
    tokenizer = PairTokenizer.load(path)
    if tokenizer.vocab_sizes != (model.config.src_vocab_size, model.config.tgt_vocab_size):
        raise UsageError(f"{path}: tokenizer vocabulary {tokenizer.vocab_sizes} does not match the model's "
                         f"{(model.config.src_vocab_size, model.config.tgt_vocab_size)}")  # fmt: skip
    return model, tokenizer


def _read_lines(path: str) -> list[str]:
    from qkv.data.parallel import _lines

    return _lines(Path(path))


def _translate(args: argparse.Namespace) -> int:
    from qkv.decoding.translate import translate_lines

    model, tokenizer = _load_translator(args.model)
    if args.input:
        lines = _read_lines(args.input)
    else:
        try:
            lines = [line.rstrip("\r\n") for line in sys.stdin.buffer.read().decode("utf-8").splitlines()]
        except UnicodeDecodeError as err:
            raise UsageError(f"<stdin>: invalid UTF-8 at byte {err.start}") from None
    for line in translate_lines(model, tokenizer, lines, args.beam, args.alpha, args.batch_size):
        print(line)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import time

    import sacrebleu

    from qkv.decoding.translate import translate_lines

    model, tokenizer = _load_translator(args.model)
    src, ref = _read_lines(args.src), _read_lines(args.ref)
    if len(src) != len(ref):
        raise UsageError(f"{args.src} has {len(src)} lines but {args.ref} has {len(ref)}")
    start = time.perf_counter()
    hyps = translate_lines(model, tokenizer, src, args.beam, args.alpha, args.batch_size, progress=not args.no_progress)
    seconds = time.perf_counter() - start
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


def _average(args: argparse.Namespace) -> int:
    from qkv.train.average import average_checkpoints

    out = Path(args.out)
    _refuse_nonempty(out, args.overwrite)
    dirs = list(args.checkpoints)
    if args.run:
        found = sorted((Path(args.run) / "checkpoints").glob("step-*"))
        if not found:
            raise UsageError(f"{args.run}/checkpoints: no step checkpoints (set train.keep_checkpoints)")
        dirs += found[-args.last :]
    average_checkpoints(dirs, out)
    print(f"averaged {len(dirs)} checkpoints into {out}: " + ", ".join(Path(d).name for d in dirs))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qkv", description="The Transformer family (encoder-decoder, BERT, GPT) in one small PyTorch codebase."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train a small translator of spelled-out dates (about a minute on a CPU) and plot its attention",
        description="Train a small encoder-decoder to turn dates written in words into ISO dates "
        "(e.g. 'twenty first of november two thousand twenty six' -> 2026-11-21), report exact match on "
        "1,000 held-out dates, print examples, save the model and a cross-attention heat map.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--steps", type=int, help="training steps (default: 800)")
    demo.add_argument("--seed", type=int, help="random seed (default: 0)")
    demo.add_argument("--min-accuracy", type=float, default=0.99, help="exit 1 below this exact match (default 0.99)")
    demo.add_argument("--overwrite", action="store_true", help="write into --out even if it holds other files")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(handler=_demo)

    train = sub.add_parser(
        "train",
        help="train a model from a TOML run config",
        description="Train the model a TOML config describes (see configs/). Writes OUT/best, OUT/last "
        "(checkpoint directories), OUT/metrics.jsonl and OUT/run_config.json.",
    )
    train.add_argument("config", help="TOML run config, e.g. configs/shakespeare_char.toml")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value (repeatable), e.g. --set train.steps=100")  # fmt: skip
    train.add_argument("--overwrite", action="store_true", help="replace a previous run in the output directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    gen = sub.add_parser(
        "generate",
        help="generate text with a GPT checkpoint, streamed to standard output",
        description="Continue --prompt with a GPT model. Temperature 0 is greedy decoding.",
    )
    gen.add_argument("--model", required=True, help="checkpoint directory")
    gen.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    gen.add_argument("--top-k", type=int, default=0, help="keep only the k most likely tokens (0 = off)")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1.0 = off)")
    gen.add_argument("--seed", type=int, help="random seed, for reproducible samples")
    gen.set_defaults(handler=_generate)

    tr = sub.add_parser(
        "translate",
        help="translate sentences with an encoder-decoder checkpoint",
        description="Read source sentences (one a line) from standard input or --input, write their "
        "translations to standard output, one a line, in the same order.",
    )
    tr.add_argument("--model", required=True, help="checkpoint directory (with its tokenizer)")
    tr.add_argument("--input", help="file of source sentences (default: standard input)")
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
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    for p in (tr, ev):
        p.add_argument("--beam", type=int, default=4, help="beam size; 1 is greedy decoding (default 4, as the paper)")
        p.add_argument("--alpha", type=float, default=0.6, help="length penalty alpha (default 0.6, as the paper)")
        p.add_argument("--batch-size", type=int, default=64, help="sentences decoded together (default 64)")
    tr.set_defaults(handler=_translate)
    ev.set_defaults(handler=_evaluate)

    avg = sub.add_parser(
        "average",
        help="average the weights of several checkpoints of one run",
        description="Average checkpoints (sec 6.1). Name them, or give --run and --last N to take the "
        "last N of RUN/checkpoints/ (written when train.keep_checkpoints is set).",
    )
    avg.add_argument("checkpoints", nargs="*", help="checkpoint directories")
    avg.add_argument("--run", help="a training output directory")
    avg.add_argument("--last", type=int, default=5, help="with --run: how many of the last checkpoints (default 5)")
    avg.add_argument("--out", required=True, help="directory for the averaged checkpoint")
    avg.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    avg.set_defaults(handler=_average)

    conv = sub.add_parser(
        "convert",
        help="convert checkpoints from/to the Hugging Face layout (GPT-2)",
        description="--from-hf reads a Hugging Face directory (config.json, model.safetensors, tokenizer "
        "files) into a qkv checkpoint; --to-hf writes a qkv checkpoint in the Hugging Face layout. "
        "Only safetensors weights are read, never pickled ones.",
    )
    which = conv.add_mutually_exclusive_group(required=True)
    which.add_argument("--from-hf", metavar="HF_DIR", help="Hugging Face model directory to read")
    which.add_argument("--to-hf", metavar="DIR", help="qkv checkpoint directory to write out")
    conv.add_argument("--out", required=True, help="directory to write")
    conv.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    conv.set_defaults(handler=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ConfigError, CheckpointError, DataError, TokenizerError) as err:
        print(f"qkv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qkv {args.command}: interrupted", file=sys.stderr)
        return 130
