"""Beam search for the encoder-decoder (sec 6.1: "beam search with a beam size of 4 and length
penalty alpha = 0.6 ... maximum output length during inference to input length + 50").

Batched: B sentences x K beams are decoded together with one KV cache. Every decision about a
sentence reads only that sentence's rows, so its result does not depend on the rest of the batch.
A sentence leaves the batch as soon as it is done, which also makes later steps cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # log-probability divided by the length penalty
    log_prob: float


def length_penalty(length: int, alpha: float) -> float:
    """lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al., 2016, eq. 14), which the paper's alpha refers to."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.inference_mode()
def beam_search(model, src: Tensor, beam_size: int = 4, alpha: float = 0.6, max_extra: int = 50) -> list[Hypothesis]:
    """src: (B, S) padded ids -> the best hypothesis of each sentence.

    `model` needs `config` (pad/bos/eos ids), `encode`, `decode` and `new_cache`, as EncoderDecoder has.
    A sentence stops when K hypotheses have ended with EOS, or at its own source length + max_extra.
    Each step chooses every sentence's K continuations with tensor operations; only the hypotheses
    that end come to Python, so a step is a few kernels and one small copy to the host, not a Python
    loop over sentences and candidates (such a loop took 44% of beam decoding on an H100).
    """
    c, k = model.config, beam_size
    b, device = src.size(0), src.device
    max_len = ((src != c.pad_id).sum(1) + max_extra).tolist()
    enc = model.encode(src)
    # one encoder row per sentence, shared by its K beams (rows j*K .. j*K+K-1): cross-attention
    # takes a sentence's K queries in one call, and the encoder keys are projected and kept once
    memory, src_mask = enc.memory, enc.src_mask  # (B, S, D), (B, 1, 1, S)
    cache = model.new_cache()
    history = torch.full((b * k, 1), c.bos_id, dtype=torch.long, device=device)  # (rows, t)
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: let only the first one expand at step 1
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    active = list(range(b))  # sentence ids of the rows in the batch, K rows each
    step = 0
    while active:
        step += 1
        logits = model.decode(history[:, -1:], memory, src_mask, cache).logits[:, -1]  # (A*K, V)
        a, v = len(active), logits.size(-1)
        top_scores, top_index = best_candidates(scores, logits, 2 * k)  # (A, 2K): enough to survive K EOS
        parent = top_index // v + k * torch.arange(a, device=device)[:, None]  # (A, 2K) the rows they extend
        word = top_index % v
        valid, eos = top_scores > float("-inf"), word == c.eos_id
        ends = valid & eos
        ends[:, k:] = False  # an EOS counts only if it is among the K best candidates
        go_on = valid & ~eos  # continuations: a beam has one EOS candidate at most, so K of the 2K remain
        pick = (~go_on).to(torch.uint8).sort(dim=1, stable=True).indices[:, :k]  # (A, K) the K best continuations
        # fewer than K with non-zero probability: the rest get -inf, which can never win
        new_scores = torch.where(go_on.gather(1, pick), top_scores.gather(1, pick), float("-inf"))  # (A, K)
        rows, words = parent.gather(1, pick), word.gather(1, pick)  # (A, K) each
        limit = [j for j, sent in enumerate(active) if step >= max_len[sent]]  # out of length: end here
        for j, hyp in _ended(ends, top_scores, parent, limit, new_scores, rows, words, history, step, alpha):
            finished[active[j]].append(hyp)
        still = [j for j, sent in enumerate(active) if len(finished[sent]) < k and step < max_len[sent]]
        if not still:
            break
        cross = None
        if len(still) < a:  # a sentence left: keep only the remaining sentences' rows and encoder rows
            cross = torch.tensor(still, device=device)
            rows, words, new_scores = rows[cross], words[cross], new_scores[cross]
            memory, src_mask = memory.index_select(0, cross), src_mask.index_select(0, cross)
        rows = rows.reshape(-1)  # (A' * K,)
        history = torch.cat([history.index_select(0, rows), words.reshape(-1, 1)], 1)
        cache.reorder(rows, cross)
        scores = new_scores
        active = [active[j] for j in still]
    return [max(hyps, key=lambda h: h.score) for hyps in finished]


def _ended(ends, top_scores, parent, limit, new_scores, rows, words, history, step, alpha) -> list:
    """The hypotheses that end at this step, as (batch position j, Hypothesis): every EOS among a
    sentence's K best candidates (ends, top_scores, parent: (A, 2K)), best first; then the surviving
    beams of each sentence j in `limit`, unfinished (new_scores, rows, words: (A, K), fillers skipped)."""
    k = rows.size(1)
    at_eos = ends.flatten().nonzero().squeeze(1)  # (E,) flat positions j * 2K + rank
    eos = at_eos.tolist()  # the one copy to the host that most steps make
    if not eos and not limit:
        return []
    at_limit = torch.tensor([j * k + i for j in limit for i in range(k)], dtype=torch.long, device=rows.device)
    parents = torch.cat([parent.flatten()[at_eos], rows.flatten()[at_limit]])
    log_probs = torch.cat([top_scores.flatten()[at_eos], new_scores.flatten()[at_limit]]).tolist()
    tokens = history.index_select(0, parents)[:, 1:].tolist()  # without BOS
    last = words.flatten()[at_limit].tolist()
    lp = length_penalty(step, alpha)
    out = [(flat // (2 * k), Hypothesis(t, s / lp, s)) for flat, t, s in zip(eos, tokens, log_probs)]
    for i, (t, s, word) in enumerate(zip(tokens[len(eos) :], log_probs[len(eos) :], last)):
        if s != float("-inf"):
            out.append((limit[i // k], Hypothesis(t + [word], s / lp, s)))
    return out


def best_candidates(scores: Tensor, logits: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The n best one-word extensions of each sentence's beams: scores (A, K) of the beams so far,
    logits (A*K, V) of their next word -> (A, n) total scores, best first, and flat beam*V + word indices.

    Score = beam score + log_softmax(logits). A sentence's n best among all K*V extensions are each
    among their own beam's n best words, so only K*n sums are formed and ranked instead of K*V."""
    a, k = scores.shape
    v = logits.size(-1)
    n_word = min(n, v)
    logp, words = row_topk(logits.float().log_softmax(-1), n_word)  # (A*K, n): each beam's best words
    totals = (scores.reshape(-1, 1) + logp).view(a, k * n_word)
    best, pick = totals.topk(min(n, k * n_word), dim=-1)  # (A, n) positions in the K*n_word ranked
    beam = pick // n_word
    word = words.view(a, k * n_word).gather(1, pick)
    return best, beam * v + word


def row_topk(x: Tensor, n: int, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """x.topk(n, dim=-1) of (R, V) rows with V >> n, in two passes that read each row once: the rows cut
    into chunks of `chunk` entries, the n chunks with the largest maxima, then the n best entries among
    those n * chunk. Exact: each of a row's n best lies in a chunk whose maximum is at least the n-th best
    value (equal values may come back with other indices). Over (256, 8,000) rows, n = 8, two threads:
    0.9 ms where topk takes 1.5 ms (`benchmarks/levers/decode_ops.py`)."""
    r, v = x.shape
    if v < 4 * n * chunk:  # too few chunks for the first pass to rule much out
        return x.topk(n, dim=-1)
    whole = v - v % chunk  # entries past the last whole chunk are candidates anyway (no padded copy)
    chunks = x[:, :whole].view(r, -1, chunk)  # (R, C, chunk)
    best_chunks = chunks.amax(-1).topk(n, dim=-1).indices  # (R, n)
    candidates = chunks.gather(1, best_chunks[:, :, None].expand(r, n, chunk)).view(r, n * chunk)
    if whole == v:
        values, at = candidates.topk(n, dim=-1)  # (R, n), positions among the candidates
        return values, best_chunks.gather(1, at // chunk) * chunk + at % chunk
    values, at = torch.cat([candidates, x[:, whole:]], 1).topk(n, dim=-1)  # the tail's entries after the chunks'
    index = best_chunks.gather(1, (at // chunk).clamp(max=n - 1)) * chunk + at % chunk
    return values, torch.where(at < n * chunk, index, at - n * chunk + whole)
