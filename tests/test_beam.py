"""Beam search against a scripted model whose next-token probabilities are set by hand."""

import math

import pytest
import torch
from conftest import random_tokens, tiny_config

from qkv.data.padding import pad_sequences
from qkv.decoding.beam import beam_search, length_penalty
from qkv.decoding.greedy import greedy_decode
from qkv.decoding.translate import translate_ids
from qkv.models.seq2seq import Decoded, Encoded, EncoderDecoder, Seq2SeqConfig

PAD, BOS, EOS, A, B = 0, 1, 2, 3, 4


class ScriptedCache:
    """Stands in for KVCache: remembers each row's prefix so the scripted model can look it up."""

    def __init__(self):
        self.rows = None

    def reorder(self, index, cross_index=None):
        self.rows = [list(self.rows[i]) for i in index.tolist()]


class ScriptedModel:
    """P(next | prefix) comes from `table` (prefix tuple -> {token: probability}); absent tokens get 0."""

    def __init__(self, table):
        self.table = table
        self.config = Seq2SeqConfig(5, 5, d_model=4, n_heads=1)

    def new_cache(self):
        return ScriptedCache()

    def encode(self, src):
        return Encoded(torch.zeros(src.size(0), src.size(1), 1), (src != PAD)[:, None, None, :], None)

    def decode(self, tgt, memory, src_mask, cache, need_weights=False):
        if cache.rows is None:
            cache.rows = [[] for _ in range(tgt.size(0))]
        logits = torch.full((tgt.size(0), 1, 5), float("-inf"))
        for r, token in enumerate(tgt[:, -1].tolist()):
            if token != BOS:
                cache.rows[r].append(token)
            for word, p in self.table.get(tuple(cache.rows[r]), {EOS: 1.0}).items():
                logits[r, 0, word] = math.log(p)
        return Decoded(logits, cache, None)


SRC = torch.tensor([[A, A, EOS]])


def test_beam_finds_the_better_hypothesis_greedy_misses():
    # Greedy takes A (0.5) then EOS (0.4): P = 0.20. Beam 2 also keeps B (0.4), whose EOS has 0.9: P = 0.36.
    table = {(): {A: 0.5, B: 0.4, EOS: 0.1}, (A,): {EOS: 0.4, A: 0.3, B: 0.3}, (B,): {EOS: 0.9, A: 0.05, B: 0.05}}
    model = ScriptedModel(table)
    best = beam_search(model, SRC, beam_size=2, alpha=0.0)[0]
    assert best.tokens == [B] and best.log_prob == pytest.approx(math.log(0.36))
    greedy = beam_search(model, SRC, beam_size=1, alpha=0.0)[0]
    assert greedy.tokens == [A] and greedy.log_prob == pytest.approx(math.log(0.20))


def test_unlikely_endings_do_not_stop_the_search_before_the_likely_one_ends():
    """A confident model: A A A then EOS, 0.9 at each step, an EOS of 0.06 everywhere else. With beam 2
    the early EOS continuations rank among the 2 best candidates and end at steps 1 and 2; stopping
    once K hypotheses had ended returned the empty output (P 0.06) where greedy finds A A A (P 0.66).
    The search goes on while a live beam can still beat the best ended hypothesis."""
    step = {A: 0.9, EOS: 0.06, B: 0.04}
    table = {(): step, (A,): step, (A, A): step, (A, A, A): {EOS: 0.9, A: 0.06, B: 0.04}}
    model = ScriptedModel(table)
    for alpha in (0.0, 0.6):
        best = beam_search(model, SRC, beam_size=2, alpha=alpha)[0]
        assert best.tokens == [A, A, A] and best.log_prob == pytest.approx(4 * math.log(0.9))
    assert beam_search(model, SRC, beam_size=1, alpha=0.0)[0].tokens == [A, A, A]


def test_length_penalty_changes_the_winner():
    # [] has P 0.55 (length 1 with EOS); [A, A, A, A] has P 0.45 (length 5 with EOS).
    table = {(): {EOS: 0.55, A: 0.45}, (A,): {A: 1.0}, (A, A): {A: 1.0}, (A, A, A): {A: 1.0}, (A, A, A, A): {EOS: 1.0}}
    model = ScriptedModel(table)
    plain = beam_search(model, SRC, beam_size=2, alpha=0.0)[0]
    assert plain.tokens == [] and plain.score == pytest.approx(math.log(0.55))
    penalised = beam_search(model, SRC, beam_size=2, alpha=1.0)[0]
    # log(0.55) / lp(1) = -0.598 loses to log(0.45) / lp(5) = -0.799 / (10/6) = -0.479
    assert penalised.tokens == [A, A, A, A]
    assert penalised.score == pytest.approx(math.log(0.45) / ((5 + 5) / 6))
    assert length_penalty(5, 0.6) == pytest.approx((10 / 6) ** 0.6)


def test_max_length_is_source_length_plus_extra():
    model = ScriptedModel({})  # no entry: EOS always
    model.table = {(A,) * n: {A: 1.0} for n in range(100)}  # never ends by itself
    out = beam_search(model, torch.tensor([[A, A, A, EOS, PAD]]), beam_size=2, alpha=0.0, max_extra=5)[0]
    assert out.tokens == [A] * 9  # 4 source tokens + 5


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = EncoderDecoder(tiny_config(dropout=0.0)).eval()
    with torch.no_grad():  # sharper distributions than a fresh init: fewer near-ties
        m.src_embed.tokens.weight.mul_(4.0)
    return m


def test_beam_one_equals_greedy(model):
    src = random_tokens(6, 7)
    src[:, -1] = EOS
    greedy = greedy_decode(model, src, max_len=20)
    for row, hyp in zip(greedy.tolist(), beam_search(model, src, beam_size=1, alpha=0.6, max_extra=13)):
        row = row[: row.index(EOS)] if EOS in row else row
        assert hyp.tokens == row


@pytest.mark.parametrize("beam", [1, 4])
def test_decoding_is_batch_invariant(model, beam):
    torch.manual_seed(3)
    sentences = [torch.randint(3, 23, (n,)).tolist() for n in (6, 2, 11, 6, 4, 9)]
    alone = [translate_ids(model, [s], beam)[0] for s in sentences]
    together = translate_ids(model, sentences, beam)  # shorter ones padded, longer ones beside them
    assert together == alone
    reversed_batch = translate_ids(model, sentences[::-1], beam)[::-1]
    assert reversed_batch == alone


def test_pad_sequences():
    assert pad_sequences([[5, 6], [7]], 0).tolist() == [[5, 6], [7, 0]]


@pytest.mark.parametrize("v", [3, 50, 3000])
def test_best_candidates_equal_ranking_every_extension(v):
    """The shortcut (rank only each beam's n best words) picks what ranking all K*V extensions picks."""
    from qkv.decoding.beam import best_candidates

    g = torch.Generator().manual_seed(v)
    a, k, n = 5, 4, 8
    scores = -torch.rand(a, k, generator=g) * 5
    scores[0, 1:] = float("-inf")  # a first step: only beam 0 may expand
    logits = torch.randn(a * k, v, generator=g) * 3
    logits[3, : v // 2] = float("-inf")  # words a model gives probability 0
    full = (scores[:, :, None] + logits.log_softmax(-1).view(a, k, v)).view(a, k * v)
    want_scores, want_index = full.topk(min(n, k * v), dim=-1)
    got_scores, got_index = best_candidates(scores, logits, n)
    torch.testing.assert_close(got_scores, want_scores)
    finite = want_scores > float("-inf")  # impossible extensions tie at -inf, in any order; none is used
    assert finite.sum() > 0.8 * finite.numel() and torch.equal(got_index[finite], want_index[finite])


@pytest.mark.parametrize("v", [4096, 8000, 5001])
def test_row_topk_equals_topk(v):
    """The two-pass top-k returns topk's values, and indices that hold them, for whole and ragged chunks."""
    from qkv.decoding.beam import row_topk

    g = torch.Generator().manual_seed(v)
    x = torch.randn(37, v, generator=g)
    x[:, -1] = 9.0  # a best entry in the last (padded, when ragged) chunk
    x[1, :100] = 5.0  # ties, more than n of them
    x[2, : v - 3] = float("-inf")  # fewer finite entries than n
    want, _ = x.topk(8, dim=-1)
    got, index = row_topk(x, 8)
    assert torch.equal(got, want)
    assert index.min() >= 0 and index.max() < v
    finite = got > float("-inf")
    assert torch.equal(x.gather(1, index)[finite], got[finite])
    assert all(len(set(row)) == 8 for row in index[finite.all(1)].tolist())  # no entry twice
