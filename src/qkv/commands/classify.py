"""qkv classify: label sentences with a BERT sequence-classification checkpoint, or score it on a
labelled TSV file."""

from __future__ import annotations

import argparse
import json

from qkv.commands import UsageError, add_device_option, at_least, input_lines, load_model


def predict(model, tok, sentences: list[str], batch_size: int) -> list[tuple[int, float]]:
    """(label, its probability) for each sentence: [CLS] sentence [SEP], cut to the model's positions."""
    import torch

    from qkv.data.padding import pad_sequences

    device = next(model.parameters()).device
    limit = model.config.max_len - 2
    out = []
    with torch.inference_mode():
        for i in range(0, len(sentences), batch_size):
            ids = [[tok.cls_id, *x[:limit], tok.sep_id] for x in tok.encode_batch(sentences[i : i + batch_size])]
            probs = model(pad_sequences(ids, tok.pad_id).to(device)).logits.softmax(-1)  # (B, n_labels)
            out += [(int(label), float(p)) for p, label in zip(*probs.max(-1))]
    return out


def accuracy(model, tok, path: str, batch_size: int) -> dict:
    """Accuracy on a labelled TSV (`tasks.bert.read_tsv`), overall and per gold label (its recall)."""
    from qkv.data.text import DataError
    from qkv.tasks.bert import read_tsv

    sentences, gold = read_tsv(path)
    if max(gold) >= model.config.n_labels:
        raise DataError(f"{path}: has label {max(gold)}, the model only 0 to {model.config.n_labels - 1}")
    guessed = [label for label, _ in predict(model, tok, sentences, batch_size)]
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
        raise UsageError(f"{args.model}: is not a BERT sequence classifier")
    tok = WordPieceTokenizer.load(args.model)
    if args.eval:
        print(json.dumps(accuracy(model, tok, args.eval, args.batch_size)))
        return 0
    lines = input_lines(args.input)
    filled = [line for line in lines if line.strip()]  # a blank line stays blank, as in `qkv translate`
    predicted = iter(predict(model, tok, filled, args.batch_size))
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
    which.add_argument("--input", help="file of sentences (default: standard input)")
    which.add_argument("--eval", metavar="TSV", help="labelled sentences to score the model on")
    cls.add_argument("--batch-size", type=at_least(1), default=64, help="sentences per forward pass (default 64)")
    add_device_option(cls)
    cls.set_defaults(handler=cmd_classify)
