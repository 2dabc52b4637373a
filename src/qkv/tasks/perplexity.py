"""How well a language model predicts a text: its loss per token and perplexity over a whole file.

A text longer than the context window is scored in windows that advance by `stride` tokens; each
feeds the model `block_size` tokens (a full context window) to predict the token after each of them.
A window scores only the tokens that earlier windows did not, so every token is scored once, with at
least block_size + 1 - stride tokens before it as context (all of them near the start). stride =
block_size cuts the text into independent pieces (cheap, but early tokens of a piece see little
context); stride = 1 gives every token a full window (exact, and block_size times the work).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from qkv.models.gpt import GPT


class Score(NamedTuple):
    tokens: int  # tokens scored: all but the first, which nothing predicts
    nll: float  # summed negative log-likelihood, in nats

    @property
    def loss(self) -> float:
        """Mean cross-entropy per token, in nats (what training reports as val_loss)."""
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


def windows(n: int, block: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first) per window of a text of n tokens: it holds ids[start:end], at most block + 1
    tokens (block inputs and the target after the last), and scores the targets first .. end - 1
    (target j predicted from ids[start:j]). The first window scores from 1; each later one ends
    `stride` further on and scores what lies past the previous end."""
    end = min(block + 1, n)
    out = [(0, end, 1)]
    while end < n:
        new_end = min(end + stride, n)
        out.append((max(0, new_end - block - 1), new_end, end))
        end = new_end
    return out


@torch.inference_mode()
def score(model: GPT, ids: list[int], stride: int, batch_size: int = 8, progress: bool = False) -> Score:
    """Summed next-token NLL of ids[1:] under `model` (see the module docstring for the windows)."""
    from tqdm import tqdm

    if len(ids) < 2:
        raise ValueError(f"a text of {len(ids)} token(s) has nothing to predict (it needs at least two)")
    if not 1 <= stride <= model.config.block_size:
        raise ValueError(f"stride must be in [1, block_size={model.config.block_size}], got {stride}")
    device = next(model.parameters()).device
    tokens = torch.tensor(ids, device=device)
    spans = windows(len(ids), model.config.block_size, stride)
    nll = torch.zeros((), dtype=torch.float64, device=device)
    # windows of one length go through the model together (most are block + 1 tokens long)
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for span in spans:
        groups.setdefault(span[1] - span[0], []).append(span)
    bar = tqdm(total=len(spans), unit="window", disable=not progress)
    for length, group in groups.items():
        for i in range(0, len(group), batch_size):
            part = group[i : i + batch_size]
            x = torch.stack([tokens[start:end] for start, end, _ in part])  # (B, L)
            logits = model(x[:, :-1]).logits  # (B, L - 1, V): position p predicts x[:, p + 1]
            losses = F.cross_entropy(logits.transpose(1, 2).float(), x[:, 1:], reduction="none")  # (B, L - 1)
            # column c holds the target at offset c + 1 in its window; a window scores offsets from
            # first - start on (earlier windows scored the ones before)
            offsets = torch.arange(1, length, device=device)  # (L - 1,)
            scored_from = torch.tensor([first - start for start, _, first in part], device=device)  # (B,)
            nll += losses.masked_fill(offsets[None, :] < scored_from[:, None], 0.0).sum(dtype=torch.float64)
            bar.update(len(part))
    bar.close()
    return Score(len(ids) - 1, float(nll))
