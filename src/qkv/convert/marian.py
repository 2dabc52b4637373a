"""Export a qkv encoder-decoder in the Hugging Face Marian layout (MarianMTModel), the paper's
architecture in `transformers`, e.g. to compare decoding speed on the same weights.

Marian computes its sinusoids with all sines in the first half of the dimensions and all cosines in
the second; qkv interleaves them as the paper writes them (sin on even, cos on odd dimensions). A
Transformer does not care how its d_model axis is ordered as long as every weight agrees, so the
export permutes that axis everywhere (embeddings, every projection's input or output on the residual
stream, every LayerNorm): the exported model computes the same function. Marian's LayerNorm has a
fixed eps of 1e-5, so outputs match exactly only for models with norm_eps = 1e-5.

`qkv convert --to-hf` uses `to_hf`: the model, plus qkv's tokenizer files as they are (Hugging Face
`tokenizers` JSON, which `PreTrainedTokenizerFast` reads; Marian's own SentencePiece tokenizer is not
written). Reading Marian checkpoints into qkv is not supported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qkv.checkpoint import CheckpointError
from qkv.convert.common import copy_files, write_tensors
from qkv.models.seq2seq import EncoderDecoder


def _perm(d: int) -> torch.Tensor:
    """Marian dimension j holds qkv dimension perm[j]: sines (even) first, then cosines (odd)."""
    return torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])


def _attention(sd, ours: str, hf: str, p, d, fused: str) -> dict:
    out = {}
    if fused == "qkv":
        q, k, v = sd[f"{ours}.qkv.weight"].chunk(3, 0)
        qb, kb, vb = sd[f"{ours}.qkv.bias"].chunk(3, 0)
    else:  # cross-attention: separate Q, fused K/V
        q, qb = sd[f"{ours}.q.weight"], sd[f"{ours}.q.bias"]
        (k, v), (kb, vb) = sd[f"{ours}.kv.weight"].chunk(2, 0), sd[f"{ours}.kv.bias"].chunk(2, 0)
    for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
        out[f"{hf}.{name}.weight"], out[f"{hf}.{name}.bias"] = w[:, p], b  # inputs come from the residual stream
    out[f"{hf}.out_proj.weight"] = sd[f"{ours}.out.weight"][p]  # outputs go back into it
    out[f"{hf}.out_proj.bias"] = sd[f"{ours}.out.bias"][p]
    return out


def to_marian(model: EncoderDecoder, out_dir: str | Path) -> Path:
    c, out_dir = model.config, Path(out_dir)
    if not (
        c.share_embeddings
        and c.tie_output
        and c.positions == "sinusoidal"
        and c.norm_placement == "post"
        and c.scale_embeddings
        and c.activation == "relu"
        and c.d_model % 2 == 0
        and (c.attention_scale, c.decoder_mask, c.residual, c.norm) == ("sqrt_dk", "causal", "add", "layer")
    ):
        raise CheckpointError(
            "only the paper's configuration (shared vocabulary, sinusoids, post-LN, ReLU) maps to Marian"
        )
    sd, p = model.state_dict(), _perm(c.d_model)
    t = {
        "model.shared.weight": sd["src_embed.tokens.weight"][:, p],
        "final_logits_bias": torch.zeros(1, c.tgt_vocab_size),
    }
    norm = lambda ours, hf: {f"{hf}.weight": sd[f"{ours}.weight"][p], f"{hf}.bias": sd[f"{ours}.bias"][p]}  # noqa: E731
    for side, n in (("encoder", c.n_encoder_layers), ("decoder", c.n_decoder_layers)):
        for i in range(n):
            ours, hf = f"{side}.layers.{i}", f"model.{side}.layers.{i}"
            t |= _attention(sd, f"{ours}.self_attn", f"{hf}.self_attn", p, c.d_model, "qkv")
            t |= norm(f"{ours}.norm_self", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                t |= _attention(sd, f"{ours}.cross_attn", f"{hf}.encoder_attn", p, c.d_model, "kv")
                t |= norm(f"{ours}.norm_cross", f"{hf}.encoder_attn_layer_norm")
            t[f"{hf}.fc1.weight"], t[f"{hf}.fc1.bias"] = sd[f"{ours}.ff.up.weight"][:, p], sd[f"{ours}.ff.up.bias"]
            t[f"{hf}.fc2.weight"], t[f"{hf}.fc2.bias"] = sd[f"{ours}.ff.down.weight"][p], sd[f"{ours}.ff.down.bias"][p]
            t |= norm(f"{ours}.norm_ff", f"{hf}.final_layer_norm")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tensors(t, out_dir / "model.safetensors", metadata={"format": "pt"})
    cfg = _marian_config(c)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out_dir


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.src.json", "tokenizer.tgt.json")  # PairTokenizer.save's


def to_hf(model: EncoderDecoder, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """`qkv convert --to-hf` for an encoder-decoder: the MarianMTModel directory and the tokenizer file(s)."""
    to_marian(model, out_dir)
    if tokenizer_dir is not None:
        copy_files(Path(tokenizer_dir), Path(out_dir), TOKENIZER_FILES)
    return Path(out_dir)


def _marian_config(c) -> dict:
    """The MarianConfig (as JSON) of a qkv Seq2SeqConfig."""
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "vocab_size": c.tgt_vocab_size,
        "decoder_vocab_size": c.tgt_vocab_size,
        "d_model": c.d_model,
        "encoder_layers": c.n_encoder_layers,
        "decoder_layers": c.n_decoder_layers,
        "encoder_attention_heads": c.n_heads,
        "decoder_attention_heads": c.n_heads,
        "encoder_ffn_dim": c.d_ff,
        "decoder_ffn_dim": c.d_ff,
        "activation_function": "relu",
        "dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": 0.0,
        "max_position_embeddings": 1024,
        "scale_embedding": True,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": True,
        "pad_token_id": c.pad_id,
        "eos_token_id": c.eos_id,
        "bos_token_id": c.bos_id,
        "decoder_start_token_id": c.bos_id,
        "forced_eos_token_id": c.eos_id,
    }
