"""qkv classify: label sentences with a BERT sequence-classification checkpoint."""

from __future__ import annotations

import argparse

from qkv.commands import UsageError, add_device_option, input_lines, load_model


def cmd_classify(args: argparse.Namespace) -> int:
    import torch

    from qkv.data.padding import pad_sequences
    from qkv.data.wordpiece import WordPieceTokenizer

    model = load_model(args.model, args.device)
    device = next(model.parameters()).device
    if model.family != "bert" or model.config.head != "sequence_classification":
        raise UsageError(f"{args.model}: is not a BERT sequence classifier")
    tok = WordPieceTokenizer.load(args.model)
    lines = input_lines(args.input)
    limit = model.config.max_len - 2
    with torch.inference_mode():
        for i in range(0, len(lines), 64):
            ids = [[tok.cls_id, *x[:limit], tok.sep_id] for x in tok.encode_batch(lines[i : i + 64])]
            probs = model(pad_sequences(ids, tok.pad_id).to(device)).logits.softmax(-1)  # (B, n_labels)
            for p, label in zip(*probs.max(-1)):
                print(f"{int(label)}\t{float(p):.4f}")
    return 0


def add_parsers(sub) -> None:
    cls = sub.add_parser(
        "classify",
        help="label sentences with a BERT classifier",
        description="Read sentences (one a line) from standard input or --input; write the predicted label "
        "and its probability, tab-separated, one line each, in the same order.",
    )
    cls.add_argument("--model", required=True, help="checkpoint directory of a fine-tuned classifier")
    cls.add_argument("--input", help="file of sentences (default: standard input)")
    add_device_option(cls)
    cls.set_defaults(handler=cmd_classify)
