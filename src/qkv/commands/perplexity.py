"""qkv perplexity: how well a GPT checkpoint predicts a text file (loss per token, perplexity)."""

from __future__ import annotations

import argparse
import json
import math

from qkv.commands import (
    UsageError,
    add_device_option,
    add_threads_option,
    at_least,
    encode_text,
    input_name,
    input_text,
    load_gpt,
)


def cmd_perplexity(args: argparse.Namespace) -> int:
    from qkv.tasks.perplexity import score

    model, tokenizer = load_gpt(args, "perplexity")
    block = model.config.block_size
    stride = args.stride or max(1, block // 2)
    if stride > block:
        raise UsageError(f"--stride {stride}: at most the context window, block_size = {block}")
    text = input_text(args.file)
    where = input_name(args.file)
    ids = encode_text(tokenizer, text, where)
    if len(ids) < 2:
        raise UsageError(f"{where}: {len(ids)} token(s), nothing to predict (it needs at least two)")
    result = score(model, ids, stride, args.batch_size, progress=not args.no_progress)
    context = block + 1 - stride
    print(
        json.dumps(
            {
                "file": where,
                "tokens": result.tokens,
                "loss": round(result.loss, 4),  # nats per token, as training's val_loss
                "perplexity": round(result.perplexity, 3),
                # over the characters predicted: all after the first token's
                "bits_per_character": round(result.nll / math.log(2) / (len(text) - len(tokenizer.decode(ids[:1]))), 4),
                "stride": stride,
                "min_context": context,
            }
        )
    )
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "perplexity",
        help="score a text file with a GPT checkpoint: loss per token, perplexity, bits per character",
        description="Score every token of --file after the first with a GPT checkpoint and print one JSON line: "
        "tokens scored, loss (mean cross-entropy in nats per token, what training reports as val_loss), "
        "perplexity (e^loss) and bits per character (comparable across tokenizers). A text longer than the "
        "context window is read in windows that advance by --stride tokens, each token scored once with at "
        "least block_size + 1 - stride tokens of context.",
    )
    p.add_argument("--model", required=True, help="GPT checkpoint directory (with its tokenizer)")
    p.add_argument(
        "--file", "--input", dest="file", required=True, help="UTF-8 text file to score (- reads standard input)"
    )
    p.add_argument(
        "--stride",
        type=at_least(1),
        default=0,
        help="tokens each window advances (default half the context window; 1 gives every token a full one)",
    )
    p.add_argument("--batch-size", type=at_least(1), default=8, help="windows per forward pass (default 8)")
    add_threads_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to standard error)")
    add_device_option(p)
    p.set_defaults(handler=cmd_perplexity)
