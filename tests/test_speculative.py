"""Speculative greedy generation (qkv.decoding.speculative) and its kernels: the draft's 8-bit products
(qkv/nn/draft_matvec.cpp) and the check's few-row products (qkv/nn/few_rows.cpp). Whatever the draft
proposes, the tokens must be plain greedy decoding's; the integer routes are forced on here, on any
processor, and so is the draft for the tiny test models' small weights."""

import pytest
import torch
import torch.nn.functional as F
from conftest import native_kernel, needs_build

import qkv.decoding.argmax as argmax
import qkv.decoding.speculative as speculative
import qkv.nn.linear as qlinear
from qkv.decoding.generate import generate
from qkv.models.gpt import GPT, GPTConfig

pytestmark = needs_build


@pytest.fixture
def drafting(monkeypatch):
    """The integer output layer and the draft's 8-bit products for every weight; returns the list of the
    checks' (proposed, checked) pairs."""
    native_kernel("draft_matvec")
    monkeypatch.setattr(argmax, "integer_products", lambda: True)
    monkeypatch.setattr(argmax, "MIN_SCREENED", 0)
    monkeypatch.setattr(qlinear, "MIN_DRAFT", 0)
    rounds = []
    real = speculative._checked

    def checked(steps, tokens, offset, integer):
        out = real(steps, tokens, offset, integer)
        rounds.append((tokens[1:], out))
        return out

    monkeypatch.setattr(speculative, "_checked", checked)
    return rounds


def tiny_gpt(seed: int, block: int = 64) -> GPT:
    """A random model whose output layer is not the token embedding: with a tied one, a random model
    mostly repeats its input token, which any draft would guess."""
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=300, block_size=block, d_model=64, n_heads=4, n_layers=2, d_ff=128, dropout=0.0, tie_output=False
    )
    return GPT(config).eval()


def plain(model: GPT, prompt: list[int], n: int, **kw) -> list[int]:
    return list(generate(model, prompt, n, temperature=0.0, speculate=False, **kw))


def test_speculative_tokens_are_plain_greedy_ones(drafting):
    model = tiny_gpt(0)
    expected = plain(model, [5, 17, 2], 40)
    assert len(set(expected)) > 10
    assert list(generate(model, [5, 17, 2], 40, temperature=0.0)) == expected
    assert drafting and sum(len(p) for p, _ in drafting) > 20  # it drafted
    assert list(generate(model, [5, 17, 2], 40, temperature=0.0, record_steps=False)) == expected
    assert list(generate(model, [5, 17, 2], 40, temperature=0.0, use_cache=False)) == expected


def test_a_wrong_draft_changes_nothing_but_the_rounds(drafting, monkeypatch):
    """A draft from unrelated weights is mostly rejected: every yielded token must still be the float32
    model's, the corrections included."""
    model = tiny_gpt(1)
    expected = plain(model, [9, 3], 50)
    real = qlinear.draft_rows

    def unrelated(x, weight, bias):
        rows = real(x, weight, bias)
        return None if rows is None else (torch.flip(rows[0], [0]), rows[1])  # rows of other outputs

    monkeypatch.setattr(qlinear, "draft_rows", unrelated)
    assert list(generate(model, [9, 3], 50, temperature=0.0)) == expected
    rejected = [1 for proposed, checked in drafting if proposed != checked[: len(proposed)]]
    assert len(rejected) > 5


def test_the_window_restarts_and_the_stop_token_as_in_plain_greedy(drafting):
    model = tiny_gpt(2, block=32)
    expected = plain(model, [5, 17, 2], 90)  # past the 32-position window: the cache restarts
    assert list(generate(model, [5, 17, 2], 90, temperature=0.0)) == expected
    stop = expected[30]
    ended = list(generate(model, [5, 17, 2], 90, temperature=0.0, stop_token=stop))
    assert ended == expected[: expected.index(stop)]


@pytest.mark.parametrize("max_draft", [1, 3, 8])
def test_any_draft_length_gives_the_same_tokens(drafting, max_draft):
    model = tiny_gpt(3)
    integer = argmax.row_screening(model.output)
    expected = plain(model, [1, 2, 3], 45)
    out = list(speculative.speculative_greedy(model, [1, 2, 3], 45, integer, max_draft=max_draft))
    assert out == expected
    assert max(len(p) for p, _ in drafting) == max_draft


def test_draft_products_are_the_rounded_weight_times_the_row():
    x = torch.randn(2, 1, 200)[:1]  # one row, with leading dimensions
    w = torch.randn(70, 200)
    b = torch.randn(70)
    p, s = native_kernel("quantize_rows")(w)
    y = native_kernel("draft_matvec")(x, p, s, b)
    assert y.shape == (1, 1, 70)
    exact = x.double() @ (p.double() * s.double()[:, None]).t() + b.double()
    # the row itself is rounded to 16 bits: within 2^-16 of its largest entry per element
    tolerance = (x.abs().max() / 32767 * (p.double() * s.double()[:, None]).abs().sum(1)).max()
    assert (y.double() - exact).abs().max() <= tolerance + 1e-5
    assert torch.isnan(native_kernel("draft_matvec")(torch.full((1, 200), float("nan")), p, s, None)).all()


def test_weights_are_rounded_row_by_row_across_threads():
    """quantize_rows splits a weight's rows across threads: each row as the row-by-row formula says."""
    w = torch.randn(2000, 300) * torch.rand(2000, 1)
    q, s = native_kernel("quantize_rows")(w)
    assert torch.allclose(s, w.abs().amax(1) / 127)
    assert (q.float() - w / s[:, None]).abs().max() <= 0.5 + 1e-3


@pytest.mark.parametrize("rows", [1, 2, 5, 8, 9, 16])
@pytest.mark.parametrize("out_f, in_f", [(33, 40), (64, 768), (7, 5)])
def test_few_rows_are_the_float32_product(rows, out_f, in_f):
    x = torch.randn(rows, in_f)
    w = torch.randn(out_f, in_f)
    for b in (torch.randn(out_f), None):
        y = native_kernel("few_rows")(x, w, b)
        exact = F.linear(x.double(), w.double(), None if b is None else b.double())
        assert torch.allclose(y.double(), exact, atol=1e-4, rtol=1e-5)


def test_linear_takes_the_few_rows_loop_only_for_inference(monkeypatch):
    native_kernel("few_rows")
    monkeypatch.setattr(qlinear, "MIN_WEIGHT", 0)
    monkeypatch.setattr(qlinear, "x86_with_both", lambda: True)
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: False)
    w = torch.randn(48, 32, requires_grad=True)
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        assert qlinear.takes_few_rows(x, w, None)
        assert torch.allclose(qlinear.linear(x, w), F.linear(x, w), atol=1e-5)
        assert not qlinear.takes_few_rows(torch.randn(17, 32), w, None)  # too many rows
    assert not qlinear.takes_few_rows(x, w, None)  # a gradient to track
