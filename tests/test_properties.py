"""Property-based tests (hypothesis): over generated inputs, only the documented errors, never a crash."""

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkv.config import ConfigError
from qkv.data.parallel import read_parallel
from qkv.data.text import DataError, read_text
from qkv.data.tokenizers import BPETokenizer, CharTokenizer
from qkv.nn.attention import eager_attention
from qkv.nn.masks import attention_mask, causal_mask, padding_mask
from qkv.train.runconfig import parse_override

FAST = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_BPE = None


def bpe() -> BPETokenizer:
    global _BPE
    if _BPE is None:
        from tokenizers import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer()
        tok.train_from_iterator(["some training text, with Ünïcödé and 日本語 too"] * 20, vocab_size=300)
        _BPE = BPETokenizer(tok._tokenizer)
    return _BPE


@FAST
@given(st.text())
def test_byte_level_bpe_round_trips_any_text(text):
    assert bpe().decode(bpe().encode(text)) == text


@FAST
@given(st.text(min_size=1))
def test_char_tokenizer_round_trips_its_own_text(text):
    tok = CharTokenizer.train(text)
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.binary(max_size=200), st.sampled_from(["error", "skip"]))
def test_parallel_reader_raises_only_data_errors(tmp_path, a, b, policy):
    (tmp_path / "a").write_bytes(a)
    (tmp_path / "b").write_bytes(b)
    try:
        corpus = read_parallel(tmp_path / "a", tmp_path / "b", policy)
    except DataError as err:
        assert str(err).count("\n") == 0
        return
    assert len(corpus.src) == len(corpus.tgt) and all(corpus.src) and all(corpus.tgt)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_lm_reader_raises_only_data_errors(tmp_path, data):
    (tmp_path / "t").write_bytes(data)
    try:
        text = read_text(tmp_path / "t")
    except DataError as err:
        assert "t" in str(err) and str(err).count("\n") == 0
        return
    assert text.strip() and text == data.decode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 9),
    st.integers(0, 9),
    st.booleans(),
    st.data(),
)
def test_masks_match_their_definition_and_never_give_nan(b, t_q, past, causal, data):
    t_k = t_q + past
    lengths = data.draw(st.lists(st.integers(0, t_k), min_size=b, max_size=b))
    tokens = torch.ones(b, t_k, dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, n:] = 0
    pad = padding_mask(tokens, 0)
    mask, is_causal = attention_mask(pad, causal, t_q, t_k, "cpu")
    full = mask if mask is not None else torch.ones(1, 1, t_q, t_k, dtype=torch.bool)
    if is_causal:
        full = full & causal_mask(t_q, t_k)
    for i in range(b):
        for q in range(t_q):
            for k in range(t_k):
                allowed = tokens[i, k] != 0 and (not causal or k <= q + past)
                assert bool(full.expand(b, 1, t_q, t_k)[i, 0, q, k]) == allowed
    qkv = [torch.randn(b, 2, n, 4) for n in (t_q, t_k, t_k)]
    out = F.scaled_dot_product_attention(*qkv, attn_mask=mask, is_causal=is_causal)
    ref, _ = eager_attention(*qkv, mask, is_causal)
    assert torch.isfinite(out).all() and (out - ref).abs().max() <= 1e-5


@FAST
@given(st.text(max_size=40))
def test_set_parser_raises_only_config_errors(text):
    try:
        keys, value = parse_override(text)
    except ConfigError:
        return
    assert keys and all(keys) and "=" in text
