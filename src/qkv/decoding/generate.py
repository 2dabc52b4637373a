"""Text generation for decoder-only models, one token per step with the KV cache."""

from __future__ import annotations

import warnings
from typing import Iterator

import torch

from qkv.decoding import check_ids
from qkv.decoding.argmax import row_screening
from qkv.decoding.filters import check_sampling, sample
from qkv.decoding.graphed import MIN_REPLAYS, GraphedSteps, next_after
from qkv.decoding.speculative import speculative_greedy
from qkv.models.gpt import GPT


def crop_prompt(ids: list[int], block_size: int, max_new_tokens: int) -> list[int]:
    """Keep the end of a prompt that would not fit the context window (with a warning), never crash."""
    room = max(1, block_size - min(max_new_tokens, block_size // 2))
    if len(ids) > room:
        warnings.warn(f"prompt of {len(ids)} tokens cropped to its last {room} (context window {block_size})")
        return ids[-room:]
    return ids


@torch.inference_mode()
def generate(
    model: GPT,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    record_steps: bool | None = None,
    stop_token: int | None = None,
    speculate: bool | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time (batch 1). The prompt is run once; each later step feeds only
    the newest token. When the context window fills, the cache restarts from the last half window
    (learned positions are absolute, so a sliding cache cannot simply drop its oldest entry).

    record_steps: replay each cached one-token step from a recording made once per attention window
    (`qkv.decoding.graphed`): a CUDA graph on a GPU, qkv's recording of its operators on the CPU
    (`qkv.decoding.recorded`), where Python, not arithmetic, sets a small model's pace. None means yes
    on both when more than `graphed.MIN_REPLAYS` tokens are asked for; False runs the ordinary cache;
    True on another device runs the fixed-buffer steps unrecorded.
    stop_token: generation ends when the model produces it (not yielded): GPT-2's <|endoftext|> ends a
    document, and what would follow it is the start of an unrelated one.
    Greedy (temperature 0) cached steps on a CPU with 8-bit integer products take the next token from
    the output layer rounded to integers once a call (`argmax.row_screening`): the same token as the
    float32 scores give, reading a quarter of the weight (GPT-2's output layer is a fifth of its bytes).
    Like a recording, that pays for itself only over more than MIN_REPLAYS tokens.
    speculate: such greedy runs draft tokens with the model's layers in 8-bit integers and check them
    several at a time in float32 (`qkv.decoding.speculative`): the same tokens, fewer passes over the
    weights. None means yes on the CPU where the integer output layer is used; False never."""
    if not prompt:
        raise ValueError("the prompt is empty (give at least one token)")
    check_sampling(temperature, top_k, top_p)
    check_ids(prompt, model.config.vocab_size, "prompt")
    block = model.config.block_size
    ids = crop_prompt(list(prompt), block, max_new_tokens)
    device = next(model.parameters()).device
    graphed = None
    recordable = device.type in ("cuda", "cpu")
    # by default only where a window could be recorded: too few steps run faster on the ordinary cache
    worth = recordable and max_new_tokens > MIN_REPLAYS
    # more than MIN_REPLAYS tokens also repay rounding the output layer (26 ms for GPT-2's)
    greedy_run = use_cache and temperature <= 0.0 and max_new_tokens > MIN_REPLAYS
    integer = row_screening(model.output) if greedy_run else None
    if integer is not None and device.type == "cpu" and speculate is not False:
        for nxt in speculative_greedy(model, ids, max_new_tokens, integer, capture=record_steps is not False):
            if nxt == stop_token:
                return
            yield nxt
        return
    if use_cache and (record_steps if record_steps is not None else worth):
        graphed = GraphedSteps(model, capture=recordable, integer=integer)
    cache, length, feed = None, 0, ids
    for made in range(max_new_tokens):
        if not use_cache:
            logits = model(torch.tensor([ids[-block:]], device=device)).logits[:, -1]
        else:
            if length + len(feed) > block:  # the window is full: start again from its last half
                feed, length = ids[-(block // 2) :], 0
            if graphed is not None:
                logits = graphed(feed, length, steps_left=max_new_tokens - made)
            else:
                cache = model.new_cache() if length == 0 else cache
                logits = next_after(model, torch.tensor([feed], device=device), cache, integer)
            length += len(feed)
        # with `integer` the steps gave the greedy token (1,) itself, not logits
        nxt = int(logits) if integer is not None else int(sample(logits, temperature, top_k, top_p, generator))
        if nxt == stop_token:
            return
        ids.append(nxt)
        feed = [nxt]
        yield nxt
