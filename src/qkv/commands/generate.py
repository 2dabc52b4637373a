"""qkv generate: text from a GPT checkpoint, streamed as it is produced."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Iterator

from qkv.commands import (
    UsageError,
    add_device_option,
    add_threads_option,
    at_least,
    encode_text,
    in_range,
    input_name,
    input_text,
    load_gpt,
)

SEPARATOR = "---------------"  # a line of its own between samples (--samples N)


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from qkv.checkpoint import CheckpointError
    from qkv.data.tokenizers import decode_stream
    from qkv.decoding.generate import crop_prompt, generate

    text = input_text(args.prompt_file) if args.prompt_file else args.prompt
    _note_greedy(args)
    model, tokenizer = load_gpt(args, "generate")
    prompt = encode_text(tokenizer, text, input_name(args.prompt_file) if args.prompt_file else "--prompt")
    if not prompt:
        raise UsageError("--prompt is empty: give at least one character to continue (the default is a newline)")
    with warnings.catch_warnings(record=True) as caught:  # one line on stderr, not Python's warning with source
        warnings.simplefilter("always")
        prompt = crop_prompt(prompt, model.config.block_size, args.max_new_tokens)
    for w in caught:
        print(f"qkv generate: warning: {w.message}", file=sys.stderr)
    # the sampler draws on the model's device, so its generator lives there too (a seed gives the same
    # text again on the same device; CPU and GPU random streams differ); one stream for all samples
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(args.seed) if args.seed is not None else None
    stop = None if args.ignore_eos else tokenizer.end_of_text
    for n in range(args.samples):
        sys.stdout.write((SEPARATOR + "\n" if n else "") + text)
        made: list[int] = []
        tokens = generate(
            model, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, generator, stop_token=stop
        )
        try:
            for piece in decode_stream(tokenizer, _copied(tokens, made)):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except FloatingPointError as err:
            raise CheckpointError(f"{args.model}: {err}") from None
        sys.stdout.write("\n")
        if len(made) < args.max_new_tokens:
            print(
                f"qkv generate: stopped at <|endoftext|> after {len(made)} tokens (--ignore-eos goes on)",
                file=sys.stderr,
            )
    return 0


def _note_greedy(args: argparse.Namespace) -> None:
    """Temperature 0 picks the most likely token every step: a sampling option given with it does
    nothing, and several samples are the same text; one line says so rather than nothing."""
    if args.temperature > 0:
        return
    unused = [
        flag
        for flag, given in (("--top-k", args.top_k), ("--top-p", args.top_p < 1.0), ("--seed", args.seed is not None))
        if given
    ]
    if unused:
        verb = "changes" if len(unused) == 1 else "change"
        print(f"qkv generate: note: --temperature 0 is greedy, so {', '.join(unused)} {verb} nothing", file=sys.stderr)
    if args.samples > 1:
        print(
            f"qkv generate: note: --temperature 0 is greedy, so the {args.samples} samples are the same",
            file=sys.stderr,
        )


def _copied(tokens: Iterator[int], into: list[int]) -> Iterator[int]:
    """The tokens, passed on as they come and kept in `into` (to tell a sample that stopped early)."""
    for token in tokens:
        into.append(token)
        yield token


def add_parsers(sub) -> None:
    gen = sub.add_parser(
        "generate",
        help="generate text with a GPT checkpoint, streamed to standard output",
        description="Continue --prompt with a GPT model. Temperature 0 is greedy decoding.",
    )
    gen.add_argument("--model", required=True, help="checkpoint directory")
    start = gen.add_mutually_exclusive_group()
    start.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    start.add_argument(
        "--prompt-file", help="continue the text of this UTF-8 file instead (- reads it from standard input)"
    )
    gen.add_argument("--max-new-tokens", type=at_least(1), default=200, help="tokens to generate (default 200)")
    gen.add_argument("--temperature", type=in_range(0.0, float("inf")), default=1.0, help="0 = greedy (default 1.0)")
    gen.add_argument("--top-k", type=at_least(0), default=0, help="keep only the k most likely tokens (0 = off)")
    gen.add_argument(
        "--top-p",
        type=in_range(0.0, 1.0, low_open=True),
        default=1.0,
        help="nucleus threshold in (0, 1] (1.0 = off)",
    )
    gen.add_argument(
        "--samples",
        type=at_least(1),
        default=1,
        help="how many continuations of the prompt to write, one after another (default 1)",
    )
    gen.add_argument(
        "--ignore-eos",
        action="store_true",
        help="go on past <|endoftext|> (by default a sample ends there: GPT-2 puts it between documents)",
    )
    gen.add_argument("--seed", type=int, help="random seed, for reproducible samples")
    add_threads_option(gen, note="; a very small model's steps gain little from a second one")
    add_device_option(gen)
    gen.set_defaults(handler=cmd_generate)
