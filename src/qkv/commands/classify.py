"""qkv classify: label sentences with a BERT sequence-classification checkpoint, or score it on a
labelled TSV file."""

from __future__ import annotations

import argparse
import json
import sys

from qkv.commands import UsageError, add_device_option, at_least, input_lines, input_name, lines_named, load_model


def predict(
    model, tok, sentences: list[str], batch_size: int, progress: bool = False, cut: list[int] | None = None
) -> list[tuple[int, float]]:
    """(label, its probability) for each sentence: [CLS] sentence [SEP], cut to the model's positions
    (the index of each sentence that was cut is added to `cut` when given, so the caller can say so).
    Batches hold sentences of similar length (less padding to compute), and the results come back in
    the order of `sentences`; padding is masked, so a sentence's label does not depend on its batch."""
    import torch
    from tqdm import tqdm

    from qkv.data.padding import pad_sequences

    device = next(model.parameters()).device
    limit = model.config.max_len - 2
    encoded = tok.encode_batch(sentences)
    if cut is not None:
        cut.extend(i for i, x in enumerate(encoded) if len(x) > limit)
    ids = [[tok.cls_id, *x[:limit], tok.sep_id] for x in encoded]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[tuple[int, float]] = [(0, 0.0)] * len(ids)
    with torch.inference_mode():
        batches = range(0, len(order), batch_size)  # a bar (on stderr) only when there is a wait
        for start in tqdm(batches, desc="classifying", unit="batch", disable=not progress or len(batches) < 2):
            chunk = order[start : start + batch_size]
            x = pad_sequences([ids[i] for i in chunk], tok.pad_id).to(device)  # (B, T)
            probs = model(x).logits.softmax(-1)  # (B, n_labels)
            for i, p, label in zip(chunk, *probs.max(-1)):
                out[i] = (int(label), float(p))
    return out


def note_cut(model, source: str, line_numbers: list[int]) -> None:
    """One line on stderr when sentences were longer than the model's positions: the label of a cut
    sentence comes from its beginning only, which the user should know (BERT reads at most max_len)."""
    if line_numbers:
        limit = model.config.max_len - 2
        print(
            f"qkv classify: note: {lines_named(source, line_numbers)} longer than the model's {limit} tokens: "
            f"labelled from the first {limit}",
            file=sys.stderr,
        )


def accuracy(model, tok, path: str, batch_size: int, progress: bool = False) -> dict:
    """Accuracy on a labelled TSV (`tasks.bert.read_tsv`), overall and per gold label (its recall)."""
    from qkv.data.text import DataError
    from qkv.tasks.bert import read_tsv

    sentences, gold = read_tsv(path)
    if max(gold) >= model.config.n_labels:
        raise DataError(f"{path}: has label {max(gold)}, the model only 0 to {model.config.n_labels - 1}")
    cut: list[int] = []
    guessed = [label for label, _ in predict(model, tok, sentences, batch_size, progress, cut)]
    note_cut(model, path, [i + 2 for i in cut])  # line 1 is the header
    hits = [g == p for g, p in zip(gold, guessed)]
    per_label = {str(c): sum(h for h, g in zip(hits, gold) if g == c) / gold.count(c) for c in sorted(set(gold))}
    return {
        "file": path,
        "sentences": len(gold),
        "accuracy": round(sum(hits) / len(gold), 4),
        "accuracy_per_label": {c: round(a, 4) for c, a in per_label.items()},
    }


def cmd_classify(args: argparse.Namespace) -> int:
    from qkv.data.wordpiece import WordPieceTokenizer

    model = load_model(args.model, args.device)
    if model.family != "bert" or model.config.head != "sequence_classification":
        if model.family != "bert":
            raise UsageError(f"{args.model}: is a {model.family} model, not a BERT sequence classifier")
        hint = ""
        if model.config.head == "pretraining":
            hint = f" (fine-tune it first: qkv train configs/sst2.toml --set init={args.model})"
        raise UsageError(f"{args.model}: is a BERT with the {model.config.head} head, not a sequence classifier{hint}")
    tok = WordPieceTokenizer.load(args.model)
    if args.eval:
        print(json.dumps(accuracy(model, tok, args.eval, args.batch_size, not args.no_progress)))
        return 0
    lines = input_lines(args.input)
    filled = [line for line in lines if line.strip()]  # a blank line stays blank, as in `qkv translate`
    cut: list[int] = []
    predicted = iter(predict(model, tok, filled, args.batch_size, not args.no_progress, cut))
    filled_lines = [number for number, line in enumerate(lines, 1) if line.strip()]
    note_cut(model, input_name(args.input), [filled_lines[i] for i in cut])
    for line in lines:
        print("{}\t{:.4f}".format(*next(predicted)) if line.strip() else "")
    return 0


def add_parsers(sub) -> None:
    cls = sub.add_parser(
        "classify",
        help="label sentences with a BERT classifier, or measure its accuracy on a labelled file",
        description="Read sentences (one a line) from standard input or --input; write the predicted label "
        "and its probability, tab-separated, one line each, in the same order (a blank line stays blank). "
        "With --eval TSV (a header naming `sentence` and `label`, as SST-2's dev.tsv), print one JSON line "
        "instead: the accuracy, overall and for each label.",
    )
    cls.add_argument("--model", required=True, help="checkpoint directory of a fine-tuned classifier")
    which = cls.add_mutually_exclusive_group()
    which.add_argument("--input", help="file of sentences (default, or -: standard input)")
    which.add_argument("--eval", metavar="TSV", help="labelled sentences to score the model on")
    cls.add_argument("--batch-size", type=at_least(1), default=64, help="sentences per forward pass (default 64)")
    cls.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to standard error)")
    add_device_option(cls)
    cls.set_defaults(handler=cmd_classify)
