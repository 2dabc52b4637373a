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
written). `from_hf` reads such a directory back (after training in `transformers`, say): a
MarianMTModel whose shape qkv's paper configuration can express, with qkv's tokenizer files beside it.
Marian's SentencePiece checkpoints (opus-mt) come with no such files: `convert.opus_mt` reads them
(their SiLU activation and output bias are expressed here too).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qkv.checkpoint import CheckpointError, save
from qkv.convert.common import copy_files, load_renamed, names_the_file, read_json, read_tensors, write_tensors
from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig


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
        and c.activation in _ACTIVATIONS
        and c.d_model % 2 == 0
        and (c.attention_scale, c.decoder_mask, c.residual, c.norm) == ("sqrt_dk", "causal", "add", "layer")
    ):
        raise CheckpointError(
            "only the paper's configuration (shared vocabulary, sinusoids, post-LN, ReLU or SiLU) maps to Marian"
        )
    sd, p = model.state_dict(), _perm(c.d_model)
    t = {
        "model.shared.weight": sd["src_embed.tokens.weight"][:, p],
        "final_logits_bias": sd["output.bias"][None] if c.output_bias else torch.zeros(1, c.tgt_vocab_size),
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


_MARIAN_DEFAULTS = {"scale_embedding": False, "share_encoder_decoder_embeddings": True}  # MarianConfig's
_ACTIVATIONS = {"relu": "relu", "silu": "swish"}  # qkv's name -> Marian's (MarianConfig defaults to gelu)
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
        "activation_function": _ACTIVATIONS[c.activation],
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


@names_the_file
def config_from_hf(hf: dict, source: Path, output_bias: bool = False) -> Seq2SeqConfig:
    """The qkv config of a MarianConfig (as JSON), or a CheckpointError naming what qkv cannot express.
    output_bias: whether the model keeps Marian's final_logits_bias (qkv's own exports have zeros)."""
    need = {
        "scale_embedding": True,
        "share_encoder_decoder_embeddings": True,
        "decoder_vocab_size": hf.get("vocab_size"),
        "decoder_attention_heads": hf.get("encoder_attention_heads"),
        "decoder_ffn_dim": hf.get("encoder_ffn_dim"),
    }
    for key, value in need.items():
        if hf.get(key, _MARIAN_DEFAULTS.get(key, value)) != value:  # absent: MarianConfig's default
            got = hf.get(key, _MARIAN_DEFAULTS.get(key))
            raise CheckpointError(f"{source}: {key} = {got!r} has no counterpart here (qkv needs {value!r})")
    activation = {v: k for k, v in _ACTIVATIONS.items()}.get(hf.get("activation_function", "gelu"))
    if activation is None:
        raise CheckpointError(
            f"{source}: activation_function = {hf.get('activation_function', 'gelu')!r} has no counterpart here"
        )
    try:
        return Seq2SeqConfig(
            src_vocab_size=hf["vocab_size"],
            tgt_vocab_size=hf["vocab_size"],
            d_model=hf["d_model"],
            n_heads=hf["encoder_attention_heads"],
            n_encoder_layers=hf["encoder_layers"],
            n_decoder_layers=hf["decoder_layers"],
            d_ff=hf["encoder_ffn_dim"],
            activation=activation,
            output_bias=output_bias,
            dropout=hf.get("dropout", 0.1),
            attention_dropout=hf.get("attention_dropout", 0.0),
            norm_eps=1e-5,  # Marian's LayerNorm eps is fixed
            max_len=hf.get("max_position_embeddings", 1024),  # Marian's table; qkv's sinusoids grow past it
            pad_id=hf["pad_token_id"],
            bos_id=hf.get("decoder_start_token_id", hf.get("bos_token_id", 1)),
            eos_id=hf["eos_token_id"],
        )
    except KeyError as err:
        raise CheckpointError(f"{source}: no {err.args[0]!r}") from None


def _from_marian_names(raw: dict, c: Seq2SeqConfig, source: Path) -> dict:
    """Marian tensors -> qkv names, the width axis put back in qkv's order (the inverse of `to_marian`)."""
    inv = torch.argsort(_perm(c.d_model))
    take = raw.pop  # each Marian tensor is taken once; what is left at the end is unexpected
    shared = next((n for n in ("model.shared.weight", "model.encoder.embed_tokens.weight") if n in raw), None)
    if shared is None:
        raise CheckpointError(f"{source}: no shared embedding (model.shared.weight)")
    t = {"src_embed.tokens.weight": take(shared)[:, inv]}
    bias = raw.pop("final_logits_bias", None)  # (1, V)
    if c.output_bias:
        t["output.bias"] = bias[0] if bias is not None else torch.zeros(c.tgt_vocab_size)
    elif bias is not None and bias.abs().max() > 0:
        raise CheckpointError(f"{source}: final_logits_bias is not zero, and this config has no output bias")
    for name in [n for n in raw if n.endswith("embed_positions.weight") or n in _TIED_COPIES]:
        del raw[name]  # fixed sinusoids (recomputed), or copies of the shared embedding
    for side, n in (("encoder", c.n_encoder_layers), ("decoder", c.n_decoder_layers)):
        for i in range(n):
            ours, hf = f"{side}.layers.{i}", f"model.{side}.layers.{i}"
            parts = [("self_attn", "self_attn", "norm_self", "self_attn_layer_norm")]
            if side == "decoder":
                parts.append(("cross_attn", "encoder_attn", "norm_cross", "encoder_attn_layer_norm"))
            for attn, hf_attn, norm, hf_norm in parts:
                w = {x: take(f"{hf}.{hf_attn}.{x}_proj.weight")[:, inv] for x in "qkv"}
                b = {x: take(f"{hf}.{hf_attn}.{x}_proj.bias") for x in "qkv"}
                if attn == "self_attn":
                    t[f"{ours}.{attn}.qkv.weight"] = torch.cat([w["q"], w["k"], w["v"]])
                    t[f"{ours}.{attn}.qkv.bias"] = torch.cat([b["q"], b["k"], b["v"]])
                else:
                    t[f"{ours}.{attn}.q.weight"], t[f"{ours}.{attn}.q.bias"] = w["q"], b["q"]
                    t[f"{ours}.{attn}.kv.weight"] = torch.cat([w["k"], w["v"]])
                    t[f"{ours}.{attn}.kv.bias"] = torch.cat([b["k"], b["v"]])
                t[f"{ours}.{attn}.out.weight"] = take(f"{hf}.{hf_attn}.out_proj.weight")[inv]
                t[f"{ours}.{attn}.out.bias"] = take(f"{hf}.{hf_attn}.out_proj.bias")[inv]
                t[f"{ours}.{norm}.weight"] = take(f"{hf}.{hf_norm}.weight")[inv]
                t[f"{ours}.{norm}.bias"] = take(f"{hf}.{hf_norm}.bias")[inv]
            t[f"{ours}.ff.up.weight"], t[f"{ours}.ff.up.bias"] = (
                take(f"{hf}.fc1.weight")[:, inv],
                take(f"{hf}.fc1.bias"),
            )
            t[f"{ours}.ff.down.weight"], t[f"{ours}.ff.down.bias"] = (
                take(f"{hf}.fc2.weight")[inv],
                take(f"{hf}.fc2.bias")[inv],
            )
            t[f"{ours}.norm_ff.weight"] = take(f"{hf}.final_layer_norm.weight")[inv]
            t[f"{ours}.norm_ff.bias"] = take(f"{hf}.final_layer_norm.bias")[inv]
    if raw:
        raise CheckpointError(f"{source}: unexpected weights {sorted(raw)[:4]} for this Marian config")
    return t


_TIED_COPIES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")


def from_hf(hf_dir: str | Path, out_dir: str | Path) -> EncoderDecoder:
    """Read a MarianMTModel directory written by `to_hf` (or by `transformers` after it) into a qkv
    checkpoint: config.json, model.safetensors and qkv's tokenizer file(s); or an opus-mt one, with
    SentencePiece tokenizers (`convert.opus_mt`)."""
    from qkv.convert import opus_mt

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if opus_mt.is_opus_mt(hf_dir) and not any((hf_dir / name).is_file() for name in TOKENIZER_FILES):
        return opus_mt.from_opus_mt(hf_dir, out_dir)  # SentencePiece vocabularies: reordered for qkv
    weights = hf_dir / "model.safetensors"
    raw = read_tensors(weights)
    bias = raw.get("final_logits_bias")
    config = config_from_hf(
        read_json(hf_dir / "config.json"), hf_dir / "config.json", bool(bias is not None and bias.any())
    )
    model = model_from_tensors(raw, config, weights)
    save(model, out_dir)
    copy_files(hf_dir, out_dir, TOKENIZER_FILES)
    return model.eval()


def model_from_tensors(raw: dict, config: Seq2SeqConfig, weights: Path) -> EncoderDecoder:
    """The qkv model holding a Marian checkpoint's tensors (read from `weights`, named in errors)."""
    try:
        tensors = _from_marian_names(raw, config, weights)
    except KeyError as err:
        raise CheckpointError(f"{weights}: no {err.args[0]} for a {config.n_decoder_layers}-layer decoder") from None
    model = EncoderDecoder(config)
    load_renamed(model, tensors, weights)
    return model
