import pytest
import torch
from conftest import random_tokens

from qkv.data.padding import pad_sequences
from qkv.decoding.argmax import first_argmax
from qkv.decoding.beam import beam_search
from qkv.decoding.encoding import MIN_GROUP, encode_by_length, length_groups, source_lengths
from qkv.decoding.greedy import greedy_decode
from qkv.decoding.translate import translate_ids


def _greedy_without_cache(model, src, max_len):
    """Reference: re-run the whole decoder on the full prefix at every step."""
    c = model.config
    enc = model.encode(src)
    ys = torch.full((src.size(0), 1), c.bos_id)
    done = torch.zeros(src.size(0), dtype=torch.bool)
    for _ in range(max_len):
        nxt = model.decode(ys, enc.memory, enc.src_mask).logits[:, -1].argmax(-1).masked_fill(done, c.pad_id)
        ys = torch.cat([ys, nxt[:, None]], 1)
        done |= nxt == c.eos_id
        if done.all():
            break
    return ys[:, 1:]


def test_cached_greedy_equals_uncached(tiny_model):
    torch.manual_seed(1)
    src = random_tokens(4, 8)
    src[2, 5:] = 0
    with torch.no_grad():
        expected = _greedy_without_cache(tiny_model, src, 15)
    assert torch.equal(greedy_decode(tiny_model, src, 15), expected)


def test_finished_rows_leave_the_batch_without_changing_the_others(tiny_model):
    # favour </s> (id 2, output tied to its embedding) so rows end at different steps
    with torch.no_grad():
        tiny_model.output.weight[2] *= 1.4
    torch.manual_seed(3)
    src = random_tokens(32, 6)
    with torch.no_grad():
        expected = _greedy_without_cache(tiny_model, src, 12)
    ends = [row.index(2) if 2 in row else None for row in expected.tolist()]
    # a quarter of the rows end at once (so they are dropped), one ends later, some never end
    assert ends.count(0) >= 8 and any(e not in (0, None) for e in ends) and None in ends
    assert torch.equal(greedy_decode(tiny_model, src, 12), expected)


def test_greedy_stops_when_every_row_ended(tiny_model):
    with torch.no_grad():  # final hidden state = e_0, and only </s> (id 2) has weight on dimension 0
        last_norm = tiny_model.decoder.layers[-1].norm_ff
        last_norm.weight.zero_()
        last_norm.bias.zero_()
        last_norm.bias[0] = 1.0
        tiny_model.output.weight[:, 0] = 0.0
        tiny_model.output.weight[2, 0] = 100.0
    out = greedy_decode(tiny_model, random_tokens(3, 5), 10)
    assert out.shape == (3, 1) and (out == 2).all()


def test_cache_reorders_in_a_row_keep_the_selected_history():
    # beam search reorders at every step: rows may repeat (two beams from one parent), leave (a
    # finished sentence) or grow, and the buffers may grow between reorders
    from qkv.nn.cache import LayerCache

    g = torch.Generator().manual_seed(0)
    cache, k_ref, v_ref = LayerCache(), torch.empty(6, 2, 0, 4), torch.empty(6, 2, 0, 4)
    steps = [(3, [0, 0, 2, 3, 5, 5]), (20, [5, 4, 3, 2, 1, 0]), (1, [1, 1, 2]), (1, [2, 0]), (2, [1, 0, 1, 1])]
    for n_new, index in [*steps, (30, [3])]:  # (new positions, rows to keep)
        b = k_ref.size(0)
        k, v = torch.randn(b, 2, n_new, 4, generator=g), torch.randn(b, 2, n_new, 4, generator=g)
        k_ref, v_ref = torch.cat([k_ref, k], 2), torch.cat([v_ref, v], 2)
        packed = cache.k is not None and n_new == 1  # a reorder left room for exactly one position
        got_k, got_v = cache.append(k, v)
        assert torch.equal(got_k, k_ref) and torch.equal(got_v, v_ref)
        assert not packed or (got_k.is_contiguous() and got_v.is_contiguous())
        cache.reorder(torch.tensor(index))
        k_ref, v_ref = k_ref[index], v_ref[index]
        assert torch.equal(cache.k[:, :, : cache.length], k_ref) and torch.equal(cache.v[:, :, : cache.length], v_ref)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(beam=0), r"beam size must be >= 1 \(1 is greedy\), got 0"),
        (dict(beam=4, max_extra=-1), "max_extra must be >= 0"),
        (dict(beam=4, alpha=float("nan")), "alpha .* must be finite and >= 0, got nan"),
        (dict(beam=4, alpha=-0.5), "alpha .* must be finite and >= 0, got -0.5"),
        (dict(src_ids=[[3, 4], [5, 10_000]]), r"source token id 10000 is outside the model's vocabulary \(0 to 22\)"),
    ],
)
def test_translating_from_python_refuses_settings_it_would_read_otherwise(tiny_model, settings, message):
    """A beam of 0 used to decode greedily (and beam_search's own call failed with an IndexError), a
    negative max_extra cut every output short, a NaN alpha ranked beams by NaN, an id past the
    vocabulary was PyTorch's "index out of range in self"; the command line's parser never let these
    through, the library now names them."""
    settings = {"src_ids": [[3, 4, 5]], "beam": 1, **settings}
    with pytest.raises(ValueError, match=message):
        translate_ids(tiny_model, **settings)
    if "beam" in settings and settings["beam"] < 1:
        with pytest.raises(ValueError, match="beam size must be >= 1"):
            beam_search(tiny_model, torch.tensor([[3, 4, 2]]), settings["beam"])
    assert translate_ids(tiny_model, [], beam=4) == []  # nothing to translate: nothing back


@pytest.mark.parametrize("shape", [(64, 8000), (3, 256), (5, 8001), (2, 100)])
def test_first_argmax_is_argmax_with_ties_broken_to_the_first(shape):
    g = torch.Generator().manual_seed(shape[1])
    x = torch.randn(shape, generator=g)
    assert torch.equal(first_argmax(x), x.argmax(-1))
    ties = torch.randint(0, 3, shape, generator=g).float()  # many equal maxima in every row and chunk
    ties[0] = -float("inf")  # and a row of nothing but -inf
    assert torch.equal(first_argmax(ties), ties.argmax(-1))
    wide = torch.randn(shape[0], 1, shape[1] + 7, generator=g)[:, -1, : shape[1]]  # rows with a stride
    assert torch.equal(first_argmax(wide), wide.argmax(-1))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_decoding_packs_weights_for_its_own_call_only(tiny_model, monkeypatch):
    """Where MKL runs generic code, greedy and beam search multiply by weights packed for oneDNN once
    per call (here every weight, however small), with the same results up to rounding; no copy
    outlives the call. A step's logits inside the block agree with those outside it."""
    import qkv.nn.linear as qlinear
    import qkv.nn.weight_copies as weight_copies

    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)
    monkeypatch.setattr(qlinear, "MIN_PACKED", 0)
    packed = []
    real = qlinear.packed_weight
    monkeypatch.setattr(qlinear, "packed_weight", lambda w, rows: packed.append(w) or real(w, rows))
    torch.manual_seed(1)
    src = random_tokens(4, 8)
    with torch.inference_mode():
        greedy_decode(tiny_model, src, 6)
        assert packed and weight_copies.block_copies() is None
        beam_search(tiny_model, src, 3, 0.6, 5)
        assert weight_copies.block_copies() is None
        enc = tiny_model.encode(src)
        tgt = torch.full((4, 3), tiny_model.config.bos_id)
        plain = tiny_model.decode(tgt, enc.memory, enc.src_mask).logits
        with weight_copies.packed_weights():
            inside = tiny_model.decode(tgt, enc.memory, enc.src_mask).logits
    torch.testing.assert_close(inside, plain, rtol=1e-5, atol=1e-5)


def test_length_groups_halve_only_where_padding_is_saved():
    assert length_groups([]) == []
    assert length_groups([7] * 64) == [(0, 64)]  # one length: nothing to save
    assert length_groups([5] * 6 + [30] * 6) == [(0, 12)]  # halves under MIN_GROUP rows: kept whole
    assert length_groups([5] * 8 + [30] * 8) == [(0, 8), (8, 16)]
    spread = sorted([4 + i // 2 for i in range(64)])  # 4 .. 35
    groups = length_groups(spread)
    assert len(groups) > 1 and groups[0][0] == 0 and groups[-1][1] == 64
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))  # contiguous, every row once
    assert all(hi - lo >= MIN_GROUP for lo, hi in groups)


def test_encoding_by_length_gives_the_encoders_memory(tiny_model):
    torch.manual_seed(5)
    lengths = torch.randint(2, 31, (40,)).tolist()
    src = pad_sequences([random_tokens(1, n)[0].tolist() for n in lengths], 0)
    assert len(length_groups(sorted(lengths))) > 1  # the test needs rows encoded in several groups
    with torch.inference_mode():
        want, got = tiny_model.encode(src), encode_by_length(tiny_model, src)
    assert torch.equal(got.src_mask, want.src_mask)
    real = want.src_mask[:, 0, 0, :, None]  # (B, S, 1)
    torch.testing.assert_close(got.memory * real, want.memory * real, rtol=1e-5, atol=1e-5)
    assert source_lengths(src, 0).tolist() == lengths


@pytest.mark.parametrize("beam", [1, 4])
def test_sentences_of_many_lengths_translate_as_alone(tiny_model, beam):
    """A batch wide enough in length to be encoded in groups: each sentence as it translates alone."""
    torch.manual_seed(7)
    sentences = [torch.randint(3, 23, (n,)).tolist() for n in torch.randint(1, 31, (36,)).tolist()]
    assert len(length_groups(sorted(len(s) + 1 for s in sentences))) > 1
    alone = [translate_ids(tiny_model, [s], beam, max_extra=8)[0] for s in sentences]
    assert translate_ids(tiny_model, sentences, beam, max_extra=8) == alone
