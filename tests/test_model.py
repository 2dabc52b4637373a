import pytest
import torch
from conftest import random_tokens, tiny_config

from qkv.models.seq2seq import EncoderDecoder, base_config, count_parameters
from qkv.nn.block import BlockSpec, TransformerBlock
from qkv.nn.embeddings import sinusoid_table


def test_shapes(tiny_model):
    src, tgt = random_tokens(3, 9), random_tokens(3, 5)
    assert tiny_model(src, tgt).shape == (3, 5, 23)
    enc = tiny_model.encode(src)
    assert enc.memory.shape == (3, 9, 32) and enc.src_mask.shape == (3, 1, 1, 9)


def test_decoder_is_causal(tiny_model):
    """Changing target token j changes no decoder output before position j."""
    src, tgt = random_tokens(2, 8), random_tokens(2, 6)
    base = tiny_model(src, tgt)
    for j in range(1, 6):
        changed = tgt.clone()
        changed[:, j] = (changed[:, j] + 1 - 3) % 20 + 3
        out = tiny_model(src, changed)
        assert torch.equal(out[:, :j], base[:, :j]), f"position < {j} saw token {j}"
        assert not torch.allclose(out[:, j:], base[:, j:])


@pytest.mark.parametrize("positions", ["none", "sinusoidal", "learned"])
def test_encoder_permutation_equivariance_needs_positions(positions):
    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(positions=positions)).eval()
    src = random_tokens(2, 10)
    perm = torch.randperm(10)
    out, out_perm = model.encode(src).memory, model.encode(src[:, perm]).memory
    equivariant = torch.allclose(out[:, perm], out_perm, atol=1e-5)
    assert equivariant == (positions == "none")


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_incremental_decoding_matches_full_forward(placement):
    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(norm_placement=placement)).eval()
    src = random_tokens(3, 9)
    src[1, 6:] = 0  # padding in the source
    tgt = random_tokens(3, 12)
    with torch.no_grad():
        enc = model.encode(src)
        full = model.decode(tgt, enc.memory, enc.src_mask).logits
        cache = model.new_cache()
        for t in range(tgt.size(1)):
            step = model.decode(tgt[:, t : t + 1], enc.memory, enc.src_mask, cache).logits
            assert (step[:, 0] - full[:, t]).abs().max() <= 1e-5, f"step {t}"
        assert cache.length == tgt.size(1)
        # a multi-token chunk after a cached prefix (prompt-style) also matches
        cache = model.new_cache()
        model.decode(tgt[:, :5], enc.memory, enc.src_mask, cache)
        chunk = model.decode(tgt[:, 5:], enc.memory, enc.src_mask, cache).logits
        assert (chunk - full[:, 5:]).abs().max() <= 1e-5


def test_cache_reorder_selects_rows(tiny_model):
    src, tgt = random_tokens(3, 7), random_tokens(3, 4)
    with torch.no_grad():
        enc = tiny_model.encode(src)
        cache = tiny_model.new_cache()
        tiny_model.decode(tgt[:, :3], enc.memory, enc.src_mask, cache)
        index = torch.tensor([2, 0])
        cache.reorder(index, index)  # sentences change: the encoder rows too
        step = tiny_model.decode(tgt[index, 3:], enc.memory[index], enc.src_mask[index], cache).logits
        full = tiny_model.decode(tgt[index], enc.memory[index], enc.src_mask[index]).logits
    assert (step[:, 0] - full[:, 3]).abs().max() <= 1e-5


def test_fully_padded_row_has_no_nan_forward_or_backward():
    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(dropout=0.1)).train()
    src, tgt = random_tokens(3, 6), random_tokens(3, 5)
    src[1] = 0  # a source made only of padding
    tgt[2] = 0  # and a target made only of padding
    logits = model(src, tgt)
    assert torch.isfinite(logits).all()
    logits.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_dropout_acts_in_training_only():
    """Dropout (sec 5.4) changes each training forward, and is skipped in evaluation and at p = 0."""
    torch.manual_seed(0)
    model = EncoderDecoder(tiny_config(dropout=0.5))
    src, tgt = random_tokens(2, 6), random_tokens(2, 5)
    model.train()
    assert not torch.equal(model(src, tgt), model(src, tgt))
    model.eval()
    reference = model(src, tgt)
    assert torch.equal(reference, model(src, tgt))
    no_dropout = EncoderDecoder(tiny_config(dropout=0.0)).train()
    no_dropout.load_state_dict(model.state_dict())
    torch.testing.assert_close(no_dropout(src, tgt), reference, rtol=0, atol=0)


def _reference_block(block: TransformerBlock, x: torch.Tensor, pre: bool) -> torch.Tensor:
    """The sublayer formulas written out: post-LN LN(x + f(x)) (sec 3.1) or pre-LN x + f(LN(x))."""
    attn = lambda h: block.self_attn(h)[0]  # noqa: E731
    ff = lambda h: block.ff.down(torch.relu(block.ff.up(h)))  # noqa: E731
    if pre:
        x = x + attn(block.norm_self(x))
        return x + ff(block.norm_ff(x))
    x = block.norm_self(x + attn(x))
    return block.norm_ff(x + ff(x))


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_block_computes_its_norm_formula(placement):
    torch.manual_seed(0)
    spec = BlockSpec(
        d_model=16,
        n_heads=2,
        d_ff=32,
        dropout=0.0,
        attention_dropout=0.0,
        activation="relu",
        norm_placement=placement,
        norm_eps=1e-6,
    )
    block = TransformerBlock(spec, cross=False).eval()
    for p in block.parameters():  # non-trivial LayerNorm parameters, so their placement matters
        torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(2, 5, 16)
    out, _ = block(x, None, False)
    assert (out - _reference_block(block, x, placement == "pre")).abs().max() <= 1e-5
    other = _reference_block(block, x, placement != "pre")
    assert (out - other).abs().max() > 1e-2  # the two formulas really differ


def test_sinusoids_follow_the_paper():
    table = sinusoid_table(50, 8)
    for pos in (0, 1, 17, 49):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[pos, 2 * i].item() == pytest.approx(torch.tensor(angle).sin().item(), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(torch.tensor(angle).cos().item(), abs=1e-6)


def test_embeddings_are_scaled_and_tied(tiny_model):
    m = tiny_model
    assert m.src_embed.tokens.weight is m.tgt_embed.tokens.weight is m.output.weight
    tokens = random_tokens(1, 4)
    no_pos = EncoderDecoder(tiny_config(positions="none", dropout=0.0)).eval()
    assert torch.allclose(no_pos.src_embed(tokens), no_pos.src_embed.tokens(tokens) * 32**0.5)


def test_base_parameter_count_matches_the_paper_by_hand():
    """Base model, shared 37,000-token vocabulary, all three embedding matrices tied (sec 3.4)."""
    v, d, f, n = 37000, 512, 2048, 6
    attention = 4 * (d * d + d)  # W^Q, W^K, W^V, W^O with biases
    ffn = d * f + f + f * d + d
    norm = 2 * d
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    by_hand = v * d + n * encoder_layer + n * decoder_layer
    model = EncoderDecoder(base_config(v))
    count = count_parameters(model)
    print(f"\nbase model, shared vocab of {v}: {count:,} parameters (paper, Table 3: 65M)")
    assert count == by_hand == 63_082_496
