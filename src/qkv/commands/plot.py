"""qkv plot attention / positions / schedule: PNG files that show what the model and its training do."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qkv.commands import UsageError, at_least, visible, writable


def _seq2seq_inputs(model_dir: Path, text: str):
    """(source ids, source labels, target id -> label) with the checkpoint's own tokenizer."""
    from qkv.data.vocab import saved_word_vocab, words_of

    vocab = saved_word_vocab(model_dir)
    if vocab is not None:  # the demo's words
        words = words_of(text)
        return vocab.encode(words), words, lambda t: vocab.itos[t]
    from qkv.data.subword import PairTokenizer

    tok = PairTokenizer.load(model_dir)
    enc = tok.src.encode(text)
    return enc.ids, [visible(t) for t in enc.tokens], lambda t: visible(tok.tgt.id_to_token(t))


def png(out: str, name: str) -> Path:
    """--out of a one-file plot: a file to write, `name` inside it when it is a directory, and with the
    .png that matplotlib would otherwise add silently (so the path printed is the one written)."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(out) / name if Path(out).is_dir() else Path(out)
    path = path if path.suffix else path.with_suffix(".png")
    if path.suffix[1:].lower() not in FigureCanvasBase.get_supported_filetypes():  # else a traceback at the end
        formats = "(name a .png, .svg or .pdf)"
        raise UsageError(f"{path}: {path.suffix!r} is not an image format matplotlib writes {formats}")
    return writable(path, "file", "--out")


def cmd_attention(args: argparse.Namespace) -> list[Path]:
    from qkv.checkpoint import load
    from qkv.viz.attention import plot_bert, plot_gpt, plot_seq2seq

    out = writable(Path(args.out), "directory", "--out")
    model, model_dir = load(args.model), Path(args.model)
    n_layers = model.config.n_decoder_layers if model.family == "seq2seq" else model.config.n_layers
    if args.layer is not None and not 1 <= args.layer <= n_layers:
        raise UsageError(f"--layer {args.layer}: the model has layers 1 to {n_layers}")
    if args.head is not None and not 1 <= args.head <= model.config.n_heads:
        raise UsageError(f"--head {args.head}: the model has heads 1 to {model.config.n_heads}")
    if model.family == "seq2seq":
        ids, labels, tgt_label = _seq2seq_inputs(model_dir, args.text)
        paths = plot_seq2seq(model, ids, labels, tgt_label, out, args.layer, args.head)
    elif model.family == "bert":
        from qkv.data.wordpiece import WordPieceTokenizer

        tok = WordPieceTokenizer.load(model_dir)
        words = _fitted(tok.encode_batch([args.text])[0], model.config.max_len - 2, "first")
        ids = [tok.cls_id, *words, tok.sep_id]
        labels = [tok.tok.id_to_token(i) for i in ids]
        paths = plot_bert(model, ids, labels, out, args.layer, args.head)
    else:
        from qkv.data.tokenizers import load_tokenizer

        tok = load_tokenizer(model_dir)
        ids = _fitted(tok.encode(args.text), model.config.block_size, "last")
        if not ids:
            raise UsageError("--text is empty: a GPT needs at least one token to attend over")
        paths = plot_gpt(model, ids, [visible(tok.decode([i])) for i in ids], out, args.layer, args.head)
    return paths


def _fitted(ids: list[int], room: int, keep: str) -> list[int]:
    """The first or last `room` ids, with a note on stderr when that drops some (the plot would
    otherwise show less than --text without saying so)."""
    if len(ids) <= room:
        return ids
    print(
        f"qkv plot: note: --text has {len(ids)} tokens; plotted its {keep} {room}, "
        "as many as fit the model's positions",
        file=sys.stderr,
    )
    return ids[:room] if keep == "first" else ids[-room:]


def cmd_positions(args: argparse.Namespace) -> list[Path]:
    from qkv.viz.curves import plot_positions

    return [plot_positions(png(args.out, "positions.png"), args.positions, args.d_model)]


def cmd_schedule(args: argparse.Namespace) -> list[Path]:
    from qkv.train.loop import LoopConfig
    from qkv.train.optim import for_run as optim_for_run
    from qkv.train.runconfig import load_run_config, section_config
    from qkv.viz.curves import plot_schedule

    run = load_run_config(args.config, args.set)
    steps = section_config(run, "train", LoopConfig).steps
    optim = optim_for_run(run, steps)
    d_model = _d_model(run) if optim.schedule == "noam" else 0  # only eq. (3) depends on the width
    lrs = [optim.lr_at(s, d_model) for s in range(1, steps + 1)]
    title = f"{Path(run['_source']).name}: {optim.schedule}, warm-up {optim.warmup_steps}, peak {max(lrs):.2e}"
    return [plot_schedule(lrs, png(args.out, "schedule.png"), title)]


def _d_model(run: dict) -> int:
    """The width a run config trains: its `init` checkpoint's, else [model] d_model, else its preset's."""
    from qkv.checkpoint import read_config
    from qkv.models import bert, gpt, seq2seq

    if run.get("init"):
        return read_config(run["init"])[1].d_model
    if "d_model" in run["model"]:
        return run["model"]["d_model"]
    presets = {"translation": seq2seq.PRESETS, "lm": gpt.PRESETS}.get(run["task"], bert.PRESETS)
    preset = run["model"].get("preset")
    if preset not in presets:
        raise UsageError(f"{run['_source']}: [model] preset must be one of {sorted(presets)}, got {preset!r}")
    return presets[preset].d_model


def cmd_plot(args: argparse.Namespace) -> int:
    for path in args.plot(args):
        print(path)
    return 0


def add_parsers(sub) -> None:
    plot = sub.add_parser("plot", help="plot attention, positional encodings or a learning-rate schedule (PNG)")
    kinds = plot.add_subparsers(dest="kind", required=True, metavar="KIND")
    att = kinds.add_parser(
        "attention",
        help="heat maps of every layer and head on one input",
        description="For a translation model: encoder self-attention, decoder masked self-attention and "
        "encoder-decoder attention while it translates --text. For a GPT: its causal self-attention. "
        "For a BERT: its bidirectional self-attention over [CLS] --text [SEP].",
    )
    att.add_argument("--model", required=True, help="checkpoint directory")
    att.add_argument("--text", required=True, help="the input sentence")
    att.add_argument("--layer", type=int, help="only this layer (1-based)")
    att.add_argument("--head", type=int, help="only this head (1-based)")
    att.add_argument("--out", default="runs/plots", help="directory for the PNG files (default runs/plots)")
    att.set_defaults(plot=cmd_attention)
    pos = kinds.add_parser("positions", help="the sinusoidal encoding matrix and the dot products between positions")
    pos.add_argument("--positions", type=at_least(1), default=100, help="number of positions (default 100)")
    pos.add_argument("--d-model", type=at_least(1), default=128, help="encoding width (default 128)")
    pos.add_argument("--out", default="runs/plots/positions.png", help="PNG file, or a directory to write it in")
    pos.set_defaults(plot=cmd_positions)
    sch = kinds.add_parser("schedule", help="the learning rate at every step of a run config")
    sch.add_argument("config", help="TOML run config")
    sch.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    sch.add_argument("--out", default="runs/plots/schedule.png", help="PNG file, or a directory to write it in")
    sch.set_defaults(plot=cmd_schedule)
    plot.set_defaults(handler=cmd_plot)
