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

from qkv.decoding.encoding import encode_by_length
from qkv.nn.weight_copies import packed_weights


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # log-probability divided by the length penalty
    log_prob: float


def length_penalty(length: int, alpha: float) -> float:
    """lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al., 2016, eq. 14), which the paper's alpha refers to."""
    return ((5.0 + length) / 6.0) ** alpha


def check_search(beam: int, alpha: float, max_extra: int) -> None:
    """Refuse what decoding would otherwise read as something else without a word: a beam below 1
    (greedy, or an IndexError), a negative, NaN or infinite alpha (beams ranked by NaN), a negative
    max_extra (outputs cut short, to a token or none). ValueError naming the setting; the command line
    refuses the same values when it parses them."""
    if beam < 1:
        raise ValueError(f"beam size must be >= 1 (1 is greedy), got {beam}")
    if not 0.0 <= alpha < float("inf"):
        raise ValueError(f"alpha (the length penalty's exponent) must be finite and >= 0, got {alpha}")
    if max_extra < 0:
        raise ValueError(f"max_extra must be >= 0 (the tokens allowed beyond the source length), got {max_extra}")


@torch.inference_mode()
@packed_weights()  # each weight rearranged for oneDNN once per call, not once per step (qkv.nn.linear)
def beam_search(model, src: Tensor, beam_size: int = 4, alpha: float = 0.6, max_extra: int = 50) -> list[Hypothesis]:
    """src: (B, S) padded ids -> the best hypothesis of each sentence.

    `model` needs `config` (a Seq2SeqConfig: pad/bos/eos ids, position_limit), `encode`, `decode` and
    `new_cache`, as EncoderDecoder has.
    A sentence stops when K hypotheses have ended and no live beam, ending now, would rank among them
    (`_settled`), or at its own source length + max_extra (at most the model's `position_limit`).
    """
    check_search(beam_size, alpha, max_extra)
    c, k = model.config, beam_size
    b = src.size(0)
    max_len = ((src != c.pad_id).sum(1) + max_extra).tolist()
    if c.position_limit is not None:  # learned positions: no vector past the last one
        max_len = [min(m, c.position_limit) for m in max_len]
    enc = encode_by_length(model, src)  # rows in groups of similar length: less padding to compute
    # one encoder row per sentence, shared by its K beams (rows j*K .. j*K+K-1): cross-attention
    # takes a sentence's K queries in one call, and the encoder keys are projected and kept once
    memory, src_mask = enc.memory, enc.src_mask  # (B, S, D), (B, 1, 1, S)
    cache = model.new_cache()
    history = torch.full((b * k, 1), c.bos_id, dtype=torch.long, device=src.device)  # (rows, t)
    scores = torch.full((b, k), float("-inf"), device=src.device)
    scores[:, 0] = 0.0  # all beams start equal: let only the first one expand at step 1
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    active = list(range(b))  # sentence ids of the rows in the batch, K rows each
    step = 0
    while active:
        step += 1
        logits = model.decode(history[:, -1:], memory, src_mask, cache).logits[:, -1]  # (A*K, V)
        n, v = len(active), logits.size(-1)
        top_scores, top_index = best_candidates(scores, logits, 2 * k)  # (A, 2K): enough to survive K EOS
        rows, words, new_scores, still = [], [], [], []
        for j, (sent, s_row, i_row) in enumerate(zip(active, top_scores.tolist(), top_index.tolist())):
            survivors = _advance(j, finished[sent], s_row, i_row, history, k, v, c.eos_id, step, alpha)
            if step >= max_len[sent]:  # out of length: the surviving beams end here, unfinished
                for s, beam, word in survivors:
                    tokens = history[j * k + beam, 1:].tolist() + [word]
                    finished[sent].append(Hypothesis(tokens, s / length_penalty(step, alpha), s))
            if step >= max_len[sent] or _settled(finished[sent], survivors, k, step, alpha):
                continue
            still.append(sent)
            # fewer than K continuations with non-zero probability: fill with copies that can never win
            survivors += [(float("-inf"), survivors[0][1], survivors[0][2])] * (k - len(survivors))
            for s, beam, word in survivors:
                rows.append(j * k + beam)
                words.append(word)
                new_scores.append(s)
        if not still:
            break
        index = torch.tensor(rows, device=src.device)
        history = torch.cat([history.index_select(0, index), torch.tensor(words, device=src.device)[:, None]], 1)
        cross = None
        if len(still) < n:  # a sentence left: keep only the remaining sentences' encoder rows
            remaining = set(still)
            cross = torch.tensor([j for j, sent in enumerate(active) if sent in remaining], device=src.device)
            memory, src_mask = memory.index_select(0, cross), src_mask.index_select(0, cross)
        cache.reorder(index, cross)
        scores = torch.tensor(new_scores, device=src.device).view(len(still), k)
        active = still
    return [max(hyps, key=lambda h: h.score) for hyps in finished]


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


def _settled(
    finished: list[Hypothesis], survivors: list[tuple[float, int, int]], k: int, step: int, alpha: float
) -> bool:
    """True once K hypotheses have ended and the best live beam, scored as if it ended now, ranks below
    the K-th best of them (the rule `transformers` applies by default, `early_stopping=False`).
    Stopping as soon as K hypotheses have ended is not enough: with a confident model, K unlikely EOS
    continuations (each among the K best candidates of its step) can end before the likely hypothesis
    does, and one of them would be returned (tests/test_beam.py). Waiting until no live beam could win
    under any later length penalty (t2t's bound, lp(longest)) is exact but, with alpha 2, decoded the
    Multi30k test set 2.7x slower into long repetitive outputs (BLEU 37.5 -> 30.0; docs/RESULTS.md).
    `survivors` come best first."""
    if not survivors:
        return True
    if len(finished) < k:
        return False
    kth = sorted((h.score for h in finished), reverse=True)[k - 1]
    return kth >= survivors[0][0] / length_penalty(step, alpha)


def _advance(j, finished, scores, indices, history, k, v, eos, step, alpha) -> list[tuple[float, int, int]]:
    """Sentence j's 2K best candidates (flat beam*V indices, best first) -> its K surviving
    (score, beam, word); an EOS among the K best ends a hypothesis into `finished`."""
    survivors = []
    for rank, (s, index) in enumerate(zip(scores, indices)):
        if s == float("-inf") or len(survivors) == k:
            break
        beam, word = divmod(index, v)
        if word == eos:
            if rank < k:  # an EOS counts only if it is among the K best candidates
                tokens = history[j * k + beam, 1:].tolist()
                finished.append(Hypothesis(tokens, s / length_penalty(step, alpha), s))
        else:
            survivors.append((s, beam, word))
    return survivors
