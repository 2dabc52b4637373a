"""Batch-1 greedy generation with a speculative draft from the model itself (Leviathan et al., 2023;
Chen et al., 2023): the same tokens as plain greedy decoding, with fewer passes over the weights.

Why: at batch 1 a step reads every weight once to produce one token, so reading, not arithmetic, sets
the pace (a 124M GPT's 497 MB of float32 a token). A forward of several tokens reads the weights once
for all of them. So a cheap draft proposes the next `draft` tokens one at a time, and one float32 forward
over them gives the float32 model's greedy token after each; the draft's tokens are kept up to the
first that differs, which is replaced by the float32 token, and when all agree the last row gives one
more. Each round yields at least one token, and every yielded token is the float32 model's greedy
choice after the tokens before it. (The check scores several rows in one product, in another summation
order than a one-row step: a near-tie that float32 orders disagree on may go either way, as between any
two float32 implementations, `qkv.decoding.argmax`.)

The draft is the model with its layers' weights rounded to 8-bit integers row by row (`weight_copies.
draft_products`, qkv/nn/draft_matvec.cpp): a quarter of the bytes, read by a recorded step
(`graphed.GraphedSteps`) into the same fixed cache; the check's forward writes the float32 keys and
values over the draft's, and the slots past the kept tokens are hidden by `position_mask` until they are
written again. No second model, no second cache.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from qkv.decoding.argmax import IntegerWeight, integer_argmax
from qkv.decoding.graphed import GraphedSteps
from qkv.models.gpt import GPT
from qkv.nn.weight_copies import draft_products, packed_weights

# Tokens a round proposes: DRAFT at first, two more after a round whose tokens were all kept, one fewer
# after one that was cut short (between 1 and MAX_DRAFT): a draft that often disagrees costs little, one
# that agrees runs long (the schedule of `transformers`' assisted generation).
DRAFT = 4
MAX_DRAFT = 15  # the check then has 16 rows, what `few_rows` serves


def _checked(steps: GraphedSteps, tokens: list[int], offset: int, integer: IntegerWeight) -> list[int]:
    """The float32 model's greedy token after each of `tokens` (at positions offset, offset + 1, ...):
    one forward over all of them, which writes their keys and values into the cache."""
    model, device, end = steps.model, steps.token.device, offset + len(tokens)
    cache = steps.cache.at(torch.arange(offset, end, device=device), steps.window(end))
    states = model(torch.tensor([tokens], device=device), cache, output_layer=False).logits[0]  # (T, D)
    return integer_argmax(states, model.output.weight, model.output.bias, integer).tolist()


@torch.inference_mode()
def speculative_greedy(
    model: GPT,
    ids: list[int],
    max_new_tokens: int,
    integer: IntegerWeight,
    capture: bool = True,
    max_draft: int = MAX_DRAFT,
) -> Iterator[int]:
    """Yield the greedy continuation of `ids` (already cropped to the context window), max_new_tokens
    of them. `integer`: the output layer in integers (`argmax.row_screening`); capture=False runs the
    draft's steps without recording them."""
    block = model.config.block_size
    steps = GraphedSteps(model, capture=capture, integer=integer)
    ids = list(ids)
    with packed_weights():  # the draft's integer weights made once for the call
        length, pending = len(ids), int(steps(ids, 0))  # the prompt: its keys and values, the first token
        made, first_draft, draft = 0, True, min(DRAFT, max_draft)
        while True:
            ids.append(pending)
            yield pending
            made += 1
            if made == max_new_tokens:
                return
            if length + 1 > block:  # the window is full: start again from its last half (as `generate`)
                feed = ids[-(block // 2) :]
                length, pending = len(feed), int(steps(feed, 0))
                continue
            n = min(draft, max_new_tokens - made - 1, block - length - 1)
            proposed, t = [], pending
            with draft_products():
                for i in range(n):
                    # the first step eagerly: it makes the integer weights, which a recording must not contain
                    t = int(steps([t], length + i, steps_left=1 if first_draft else None))
                    first_draft = False
                    proposed.append(t)
            checked = _checked(steps, [pending] + proposed, length, integer)
            kept = 0
            while kept < n and proposed[kept] == checked[kept]:
                kept += 1
            for t in proposed[:kept]:
                ids.append(t)
                yield t
            made += kept
            draft = min(draft + 2, max_draft) if kept == n else max(1, draft - 1)
            length += kept + 1  # pending and the kept tokens are in the cache, in float32
            pending = checked[kept]
