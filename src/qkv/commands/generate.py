"""qkv generate: text from a GPT checkpoint, streamed as it is produced."""

from __future__ import annotations

import argparse
import sys

from qkv.commands import UsageError, add_device_option, load_model


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from qkv.data.tokenizers import load_tokenizer
    from qkv.decoding.generate import generate

    if args.threads < 0:
        raise UsageError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.device)
    if model.family != "gpt":
        raise UsageError(f"{args.model}: is a {model.family} model; generate needs a gpt model")
    tokenizer = load_tokenizer(args.model)
    prompt = tokenizer.encode(args.prompt)
    # the sampler draws on the model's device, so its generator lives there too (a seed gives the same
    # text again on the same device; CPU and GPU random streams differ)
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(args.seed) if args.seed is not None else None
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


def add_parsers(sub) -> None:
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
    gen.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads (0 = one per core); a very small model's steps gain little from a second one",
    )
    add_device_option(gen)
    gen.set_defaults(handler=cmd_generate)
