"""BERT's pre-training inputs (Devlin et al., 2019, sec 3.1 and appendix A.1).

Next-sentence pairs: from a document, segment A is a run of sentences and segment B is the run that
really follows it (label IsNext) half of the time, and a run from another document otherwise
(NotNext). The pair is truncated to fit, then packed as [CLS] A [SEP] B [SEP]. Pairing is random, so
each pass over the corpus draws new pairs (as BERT's released data pipeline does for each of the copies it
makes); fixed pairs seen pass after pass get memorised instead of learnt.

Masked LM: 15% of the non-special positions are selected; of those, 80% become [MASK], 10% a random
token and 10% stay unchanged. Labels are the original ids at selected positions and -100 elsewhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100  # label of positions that are not predicted (cross_entropy's ignore_index)


@dataclass
class SentencePair:
    a: list[int]
    b: list[int]
    is_next: bool
    doc: int  # document of A
    a_last: int  # index (in that document) of A's last sentence
    b_doc: int
    b_first: int  # index (in b_doc) of B's first sentence


def _truncate(a: list[int], b: list[int], budget: int, rng: random.Random) -> None:
    """Trim the longer side, from a random end, until both fit in `budget` tokens (appendix A.1)."""
    while len(a) + len(b) > budget:
        longer = a if len(a) >= len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]


def nsp_pairs(documents: list[list[list[int]]], max_len: int, rng: random.Random) -> list[SentencePair]:
    """documents: per document, its sentences as id lists -> pairs that fit max_len with 3 special tokens."""
    budget, pairs = max_len - 3, []
    multi = [i for i, d in enumerate(documents) if d]
    if len(multi) < 2:
        raise ValueError("next-sentence pairs need at least two non-empty documents")
    for d, sentences in enumerate(documents):
        start = 0
        while start < len(sentences) - 1:
            end, length = start, 0  # gather sentences up to the budget
            while end < len(sentences) and (length < budget or end - start < 2):
                length, end = length + len(sentences[end]), end + 1
            a_last = rng.randrange(start, end - 1)  # A is start..a_last, at least one sentence left for B
            a = [t for s in sentences[start : a_last + 1] for t in s]
            if rng.random() < 0.5:
                b_doc, b_first = d, a_last + 1
            else:
                b_doc = rng.choice([i for i in multi if i != d])
                b_first = rng.randrange(len(documents[b_doc]))
            b, i = [], b_first
            while i < len(documents[b_doc]) and len(a) + len(b) < budget:
                b += documents[b_doc][i]
                i += 1
            _truncate(a, b, budget, rng)
            if a and b:
                pairs.append(SentencePair(a, b, b_doc == d and b_first == a_last + 1, d, a_last, b_doc, b_first))
            start = end if b_doc != d else i  # a real B is used up; after a random B, go on from `end`
    return pairs


def hold_out_documents(
    documents: list[list[list[int]]], n_pairs: int, max_len: int, rng: random.Random
) -> tuple[list[list[list[int]]], list[SentencePair]]:
    """Set whole documents aside (in a seeded random order) until their pairs number at least `n_pairs`,
    and at least two of them (a NotNext B comes from another document). Returns the training documents
    and `n_pairs` held-out pairs: held out by document, so re-pairing the training documents every pass
    never puts held-out text into training."""
    order = [i for i, d in enumerate(documents) if d]
    rng.shuffle(order)
    for k in range(2, len(order) - 1):
        held = [documents[i] for i in order[:k]]
        pairs = nsp_pairs(held, max_len, rng)
        if len(pairs) >= n_pairs:
            rng.shuffle(pairs)
            kept = set(order[k:])
            return [d for i, d in enumerate(documents) if i in kept], pairs[:n_pairs]
    raise ValueError(
        f"{len(order)} documents cannot give {n_pairs} held-out pairs and still leave two to train on"
        " (lower data.val_pairs or add documents)"
    )


def pack(pair: SentencePair, cls_id: int, sep_id: int) -> tuple[list[int], list[int]]:
    """[CLS] A [SEP] B [SEP] and its segment ids (0 for A and its separators, 1 for B)."""
    ids = [cls_id, *pair.a, sep_id, *pair.b, sep_id]
    return ids, [0] * (len(pair.a) + 2) + [1] * (len(pair.b) + 1)


def mask_tokens(
    ids: Tensor,
    maskable: Tensor,
    mask_id: int,
    random_ids: tuple[int, int],
    generator: torch.Generator,
    p: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """ids: (B, T); maskable: (B, T) True where a token may be selected (not special, not padding).
    random_ids: [low, high) range of ordinary tokens for the 10% random replacements.
    Returns (inputs, labels)."""
    selected = (torch.rand(ids.shape, generator=generator) < p) & maskable
    labels = ids.masked_fill(~selected, IGNORE)
    r = torch.rand(ids.shape, generator=generator)
    inputs = ids.masked_fill(selected & (r < 0.8), mask_id)
    swap = selected & (r >= 0.8) & (r < 0.9)
    random_tokens = torch.randint(*random_ids, ids.shape, generator=generator)
    return torch.where(swap, random_tokens, inputs), labels
