"""BERT checkpoints in the Hugging Face layout (BertForPreTraining or ...ForMaskedLM, ...ForSequenceClassification)
<-> qkv BERT checkpoints. Hugging Face keeps separate query/key/value projections; qkv fuses them
into one (3D, D) matrix, so they are concatenated in that order (and split again on the way back).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from qkv.checkpoint import CheckpointError, save
from qkv.convert.common import copy_files, load_renamed, names_the_file, read_json, read_tensors, write_tensors
from qkv.models.bert import Bert, BertConfig

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_HEADS = {
    "BertForPreTraining": "pretraining",
    # what most BERT checkpoints name themselves, bert-base-uncased among them; their files hold the
    # pre-training weights, or (when saved by BertForMaskedLM) all but the pooler and the NSP head
    "BertForMaskedLM": "pretraining",
    "BertForSequenceClassification": "sequence_classification",
}
_NOT_IN_MASKED_LM = ("pooler.weight", "pooler.bias", "nsp.weight", "nsp.bias")

# (Hugging Face name inside bert.encoder.layer.{i}, qkv name inside encoder.layers.{i})
_LAYER = [
    ("attention.output.dense", "self_attn.out"),
    ("attention.output.LayerNorm", "norm_self"),
    ("intermediate.dense", "ff.up"),
    ("output.dense", "ff.down"),
    ("output.LayerNorm", "norm_ff"),
]
_GLOBAL = [
    ("bert.embeddings.word_embeddings.weight", "embed.tokens.weight"),
    ("bert.embeddings.position_embeddings.weight", "embed.positions.weight"),
    ("bert.embeddings.token_type_embeddings.weight", "embed.segments.weight"),
    ("bert.embeddings.LayerNorm.weight", "embed.norm.weight"),
    ("bert.embeddings.LayerNorm.bias", "embed.norm.bias"),
    ("bert.pooler.dense.weight", "pooler.weight"),
    ("bert.pooler.dense.bias", "pooler.bias"),
]
_PRETRAINING = [
    ("cls.predictions.transform.dense.weight", "mlm.transform.weight"),
    ("cls.predictions.transform.dense.bias", "mlm.transform.bias"),
    ("cls.predictions.transform.LayerNorm.weight", "mlm.norm.weight"),
    ("cls.predictions.transform.LayerNorm.bias", "mlm.norm.bias"),
    ("cls.predictions.bias", "mlm.bias"),
    ("cls.seq_relationship.weight", "nsp.weight"),
    ("cls.seq_relationship.bias", "nsp.bias"),
]
_CLASSIFIER = [("classifier.weight", "classifier.weight"), ("classifier.bias", "classifier.bias")]


def _head_names(head: str) -> list[tuple[str, str]]:
    return _GLOBAL + (_PRETRAINING if head == "pretraining" else _CLASSIFIER)


@names_the_file
def config_from_hf(hf: dict, source: Path) -> BertConfig:
    arch = (hf.get("architectures") or ["BertForPreTraining"])[0]
    if hf.get("model_type", "bert") != "bert" or arch not in _HEADS:
        raise CheckpointError(f"{source}: {arch!r} is not supported (supported: {sorted(_HEADS)})")
    if hf.get("position_embedding_type", "absolute") != "absolute" or hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{source}: only absolute positions and the exact GELU are supported")
    n_labels = len(hf.get("id2label") or {0: 0, 1: 1})
    problem = hf.get("problem_type") or ("regression" if n_labels == 1 else "single_label_classification")
    if _HEADS[arch] == "sequence_classification" and problem != "single_label_classification":
        # qkv's classifier picks one label by softmax; a regression score or independent sigmoid labels
        # would come out as a confident but meaningless label
        raise CheckpointError(f"{source}: problem_type {problem!r}; only single-label classification converts")
    return BertConfig(
        vocab_size=hf["vocab_size"],
        max_len=hf["max_position_embeddings"],
        n_segments=hf.get("type_vocab_size", 2),
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        n_layers=hf["num_hidden_layers"],
        d_ff=hf["intermediate_size"],
        dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        head=_HEADS[arch],
        n_labels=n_labels,
        pad_id=hf.get("pad_token_id") or 0,
    )


def _modern(name: str) -> str:
    """Files converted from the original TensorFlow BERT (bert-base-uncased's model.safetensors among
    them) name a LayerNorm's scale and shift `gamma` and `beta`; transformers renames them on load."""
    for old, new in (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias")):
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def from_hf(hf_dir: str | Path, out_dir: str | Path) -> Bert:
    """Read a Hugging Face BERT directory (config.json, model.safetensors, vocab.txt) into a qkv checkpoint."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    config = config_from_hf(read_json(hf_dir / "config.json"), hf_dir / "config.json")
    raw = {_modern(k): v for k, v in read_tensors(hf_dir / "model.safetensors").items()}
    raw.pop("bert.embeddings.position_ids", None)
    raw.pop("cls.predictions.decoder.weight", None)  # tied to the word embeddings
    raw.pop("cls.predictions.decoder.bias", None)  # the same tensor as cls.predictions.bias
    tensors = {ours: raw.pop(hf) for hf, ours in _head_names(config.head) if hf in raw}
    for i in range(config.n_layers):
        hf, ours = f"bert.encoder.layer.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            parts = [raw.pop(f"{hf}attention.self.{p}.{kind}", None) for p in ("query", "key", "value")]
            if all(t is not None for t in parts):
                tensors[f"{ours}self_attn.qkv.{kind}"] = torch.cat(parts, 0)
            for h_name, o_name in _LAYER:
                if f"{hf}{h_name}.{kind}" in raw:
                    tensors[f"{ours}{o_name}.{kind}"] = raw.pop(f"{hf}{h_name}.{kind}")
    if raw:
        raise CheckpointError(f"{hf_dir / 'model.safetensors'}: unexpected weights {sorted(raw)[:4]}")
    model = Bert(config)
    absent = [name for name in _NOT_IN_MASKED_LM if config.head == "pretraining" and name not in tensors]
    if absent:  # kept at their initial values, as transformers does when it loads such a file
        tensors.update({name: model.state_dict()[name] for name in absent})
        warnings.warn(
            f"{hf_dir / 'model.safetensors'}: no pooler or next-sentence head (saved by BertForMaskedLM): they "
            "start from random values, as in transformers; the masked-LM outputs are the checkpoint's"
        )
    load_renamed(model, tensors, hf_dir / "model.safetensors")
    save(model, out_dir)
    copy_files(hf_dir, out_dir, TOKENIZER_FILES)
    return model.eval()


def to_hf(model: Bert, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Write `model` as a Hugging Face BertForPreTraining or BertForSequenceClassification directory."""
    c, out_dir = model.config, Path(out_dir)
    arch = {v: k for k, v in _HEADS.items()}.get(c.head)
    if arch is None or c.norm_placement != "post" or c.activation != "gelu":
        raise CheckpointError(f"a BERT with head {c.head!r} has no Hugging Face layout here")
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = model.state_dict()
    tensors = {hf: sd[ours] for hf, ours in _head_names(c.head)}
    for i in range(c.n_layers):
        hf, ours = f"bert.encoder.layer.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for name, t in zip(("query", "key", "value"), sd[f"{ours}self_attn.qkv.{kind}"].chunk(3, 0)):
                tensors[f"{hf}attention.self.{name}.{kind}"] = t
            for h_name, o_name in _LAYER:
                tensors[f"{hf}{h_name}.{kind}"] = sd[f"{ours}{o_name}.{kind}"]
    write_tensors(tensors, out_dir / "model.safetensors", metadata={"format": "pt"})
    hf_cfg = {
        "architectures": [arch],
        "model_type": "bert",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "intermediate_size": c.d_ff,
        "hidden_act": "gelu",
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.attention_dropout,
        "max_position_embeddings": c.max_len,
        "type_vocab_size": c.n_segments,
        "layer_norm_eps": c.norm_eps,
        "pad_token_id": c.pad_id,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "id2label": {str(i): f"LABEL_{i}" for i in range(c.n_labels)},
        "label2id": {f"LABEL_{i}": i for i in range(c.n_labels)},
    }
    (out_dir / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    if tokenizer_dir is not None:
        copy_files(Path(tokenizer_dir), out_dir, TOKENIZER_FILES)
    return out_dir
