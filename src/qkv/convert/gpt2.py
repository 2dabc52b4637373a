"""GPT-2 checkpoints in the Hugging Face layout <-> qkv GPT checkpoints.

Hugging Face's GPT-2 keeps OpenAI's `Conv1D` modules, whose weight is stored (in, out): the transpose
of `nn.Linear`'s (out, in). Their fused `c_attn` holds [Q | K | V] along the output dimension, each
split into heads in order, which is exactly qkv's fused `qkv` projection, so only a transpose is needed.
"""

from __future__ import annotations

from pathlib import Path

from qkv.checkpoint import CheckpointError, save
from qkv.convert.common import copy_files, load_renamed, names_the_file, read_json, read_tensors, write_tensors
from qkv.models.gpt import GPT, GPTConfig

# GPT-2's own files, then qkv's: a byte-level BPE trained here (tokenizers' format, which transformers
# reads too) or a character table (transformers ignores it; --from-hf brings it back)
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "chars.json")
_ACT_FROM_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}

# (Hugging Face name inside transformer.h.{i}, qkv name inside blocks.layers.{i}, is a Conv1D weight)
_LAYER = [
    ("ln_1.weight", "norm_self.weight", False),
    ("ln_1.bias", "norm_self.bias", False),
    ("attn.c_attn.weight", "self_attn.qkv.weight", True),
    ("attn.c_attn.bias", "self_attn.qkv.bias", False),
    ("attn.c_proj.weight", "self_attn.out.weight", True),
    ("attn.c_proj.bias", "self_attn.out.bias", False),
    ("ln_2.weight", "norm_ff.weight", False),
    ("ln_2.bias", "norm_ff.bias", False),
    ("mlp.c_fc.weight", "ff.up.weight", True),
    ("mlp.c_fc.bias", "ff.up.bias", False),
    ("mlp.c_proj.weight", "ff.down.weight", True),
    ("mlp.c_proj.bias", "ff.down.bias", False),
]
_GLOBAL = [
    ("wte.weight", "embed.tokens.weight"),
    ("wpe.weight", "embed.positions.weight"),
    ("ln_f.weight", "blocks.final_norm.weight"),
    ("ln_f.bias", "blocks.final_norm.bias"),
]


@names_the_file
def config_from_hf(hf: dict, source: Path) -> GPTConfig:
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{source}: model_type is {hf.get('model_type')!r}, not 'gpt2'")
    for flag, ok in (
        ("scale_attn_by_inverse_layer_idx", False),
        ("reorder_and_upcast_attn", False),
        ("scale_attn_weights", True),
    ):
        if hf.get(flag, ok) != ok:
            raise CheckpointError(f"{source}: {flag}={hf[flag]} is not supported")
    act = hf.get("activation_function", "gelu_new")
    if act not in _ACT_FROM_HF:
        raise CheckpointError(f"{source}: activation_function {act!r} is not supported")
    d = hf["n_embd"]
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf["n_positions"],
        d_model=d,
        n_heads=hf["n_head"],
        n_layers=hf["n_layer"],
        d_ff=hf.get("n_inner") or 4 * d,
        dropout=hf.get("resid_pdrop", 0.1),
        attention_dropout=hf.get("attn_pdrop", 0.1),
        activation=_ACT_FROM_HF[act],
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        tie_output=hf.get("tie_word_embeddings", True),
    )


def from_hf(hf_dir: str | Path, out_dir: str | Path) -> GPT:
    """Read a GPT-2 directory (config.json, model.safetensors, vocab.json, merges.txt) into a qkv checkpoint."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    config = config_from_hf(read_json(hf_dir / "config.json"), hf_dir / "config.json")
    raw = read_tensors(hf_dir / "model.safetensors")
    # the original OpenAI-converted files have no "transformer." prefix; newer ones do
    raw = {
        k.removeprefix("transformer."): v for k, v in raw.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))
    }
    head = raw.pop("lm_head.weight", None)
    tensors = {ours: raw.pop(hf) for hf, ours in _GLOBAL if hf in raw}
    for i in range(config.n_layers):
        for hf, ours, conv in _LAYER:
            name = f"h.{i}.{hf}"
            if name in raw:
                t = raw.pop(name)
                tensors[f"blocks.layers.{i}.{ours}"] = t.t() if conv else t
    if raw:
        raise CheckpointError(
            f"{hf_dir / 'model.safetensors'}: unexpected weights {sorted(raw)[:4]} for a {config.n_layers}-layer GPT-2"
        )
    if head is not None and not config.tie_output:
        tensors["output.weight"] = head
    model = GPT(config)
    load_renamed(model, tensors, hf_dir / "model.safetensors")
    save(model, out_dir)
    copy_files(hf_dir, out_dir, TOKENIZER_FILES)
    return model.eval()


def _end_of_text_id(tokenizer_dir: str | Path | None, vocab_size: int) -> int | None:
    """The id of GPT-2's <|endoftext|> in this model's vocabulary, or None where it has none (a
    character table; no tokenizer and not GPT-2's 50,257 tokens)."""
    from qkv.data.tokenizers import TokenizerError, load_tokenizer

    try:
        tok = load_tokenizer(tokenizer_dir) if tokenizer_dir is not None else None
    except TokenizerError:
        tok = None
    if tok is not None:
        return tok.end_of_text
    return 50256 if vocab_size == 50257 else None


def to_hf(model: GPT, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write `model` as a Hugging Face GPT2LMHeadModel directory."""
    c, out_dir = model.config, Path(out_dir)
    if c.positions != "learned" or c.norm_placement != "pre":
        raise CheckpointError("only GPT-2-shaped models (learned positions, pre-LN) convert to the GPT-2 layout")
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    tensors = {f"transformer.{hf}": sd[ours] for hf, ours in _GLOBAL}
    for i in range(c.n_layers):
        for hf, ours, conv in _LAYER:
            t = sd[f"blocks.layers.{i}.{ours}"]
            tensors[f"transformer.h.{i}.{hf}"] = t.t() if conv else t
    if not c.tie_output:
        tensors["lm_head.weight"] = sd["output.weight"]
    write_tensors(tensors, out_dir / "model.safetensors", metadata={"format": "pt"})
    act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[c.activation]
    hf = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_embd": c.d_model,
        "n_head": c.n_heads,
        "n_layer": c.n_layers,
        "n_inner": c.d_ff,
        "activation_function": act,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.attention_dropout,
        "layer_norm_epsilon": c.norm_eps,
        "tie_word_embeddings": c.tie_output,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        # transformers' default, GPT-2's 50256, lies outside a smaller vocabulary (and it says so on loading)
        "bos_token_id": (eot := _end_of_text_id(tokenizer_dir, c.vocab_size)),
        "eos_token_id": eot,
    }
    import json

    (out_dir / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    if tokenizer_dir is not None:
        copy_files(Path(tokenizer_dir), out_dir, TOKENIZER_FILES)
    return out_dir
