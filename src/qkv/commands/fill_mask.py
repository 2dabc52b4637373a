"""qkv fill-mask: what a pre-trained BERT's masked-LM head predicts for each [MASK] of a text, the task
it was pre-trained on (Devlin et al., 2019, sec 3.1, "Task #1: Masked LM")."""

from __future__ import annotations

import argparse

from qkv.commands import UsageError, add_device_option, at_least, load_model


def fill(model, tok, text: str, k: int) -> tuple[list[int], list[list[tuple[int, float]]]]:
    """The text's ids (without [CLS]/[SEP]) and, for each [MASK] in it, the k most likely ids with their
    probabilities (softmax over the whole vocabulary), most likely first."""
    import torch

    ids = tok.encode_batch([text])[0]
    masks = [i for i, t in enumerate(ids) if t == tok.mask_id]
    if not masks:
        raise UsageError("--text has no [MASK]: write [MASK] where a word is to be predicted")
    limit = model.config.max_len - 2  # room for [CLS] and [SEP]
    if len(ids) > limit:
        raise UsageError(f"--text has {len(ids)} tokens, more than the model's {limit} (max_len minus [CLS], [SEP])")
    x = torch.tensor([[tok.cls_id, *ids, tok.sep_id]], device=next(model.parameters()).device)  # (1, T)
    predict = torch.zeros_like(x, dtype=torch.bool)
    predict[0, [m + 1 for m in masks]] = True  # +1: after [CLS]
    with torch.inference_mode():
        probs = model(x, predict=predict).logits.softmax(-1)  # (masks, V)
        top = probs.topk(min(k, probs.size(-1)))
    return ids, [list(zip(i.tolist(), p.tolist())) for p, i in zip(top.values, top.indices)]


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from qkv.data.wordpiece import WordPieceTokenizer

    model = load_model(args.model, args.device)
    if model.family != "bert" or model.config.head != "pretraining":
        raise UsageError(
            f"{args.model}: has no masked-LM head (a pre-trained BERT has one; a fine-tuned classifier not)"
        )
    tok = WordPieceTokenizer.load(args.model)
    ids, candidates = fill(model, tok, args.text, args.top_k)
    best = iter(c[0][0] for c in candidates)
    filled = [next(best) if t == tok.mask_id else t for t in ids]
    print(tok.decode(filled))  # every [MASK] by its most likely token
    for n, ranked in enumerate(candidates, 1):
        shown = ", ".join(f"{tok.tok.id_to_token(i)} {p:.3f}" for i, p in ranked)
        print(f"[MASK] {n}: {shown}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "fill-mask",
        help="the words a pre-trained BERT predicts for each [MASK] in a text",
        description="Run a pre-trained BERT (its masked-LM head) on [CLS] --text [SEP] and print the text with "
        "each [MASK] replaced by the most likely token, then one line per [MASK]: the --top-k tokens and their "
        "probabilities (a WordPiece that continues a word starts with ##).",
    )
    p.add_argument("--model", required=True, help="checkpoint directory of a pre-trained BERT")
    p.add_argument(
        "--text",
        required=True,
        help='the text, with [MASK] where a word is to be predicted: "paris is the [MASK] of france."',
    )
    p.add_argument("--top-k", type=at_least(1), default=5, help="candidates to show for each [MASK] (default 5)")
    add_device_option(p)
    p.set_defaults(handler=cmd_fill_mask)
