"""What the attention of a trained model does on one input: weights of every layer and head.

For an encoder-decoder the output is first decoded (greedily), then the decoder is run over its own
output with the weights kept, so the cross-attention shown is the one that produced each output token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from qkv.viz.heatmap import attention_grid


def _grid(weights: list[dict], kind: str, rows, cols, path: Path, title: str, layer: int | None, head: int | None):
    """weights: per layer {kind: (1, H, T_q, T_k)} -> one PNG of the chosen layers x heads."""
    layers = range(len(weights)) if layer is None else [layer - 1]
    panels, titles = [], []
    for i in layers:
        w = weights[i][kind][0]  # (H, T_q, T_k)
        heads = range(w.size(0)) if head is None else [head - 1]
        for h in heads:
            panels.append(w[h])
            titles.append(f"layer {i + 1}, head {h + 1}")
    n_cols = 1 if head is not None else weights[0][kind].size(1)
    return attention_grid(torch.stack(panels), rows, cols, path, title, titles, ncols=n_cols)


@torch.inference_mode()
def plot_seq2seq(model, src_ids: list[int], src_labels, tgt_label, out: Path, layer=None, head=None) -> list[Path]:
    """Encoder self-, decoder self- and cross-attention while the model translates `src_ids`."""
    from qkv.decoding.translate import translate_ids

    c = model.config
    produced = translate_ids(model, [src_ids], beam=1)[0]
    src = torch.tensor([src_ids + [c.eos_id]])
    tgt_in = torch.tensor([[c.bos_id] + produced])
    enc = model.encode(src, need_weights=True)
    dec = model.decode(tgt_in, enc.memory, enc.src_mask, need_weights=True)
    src_tokens = list(src_labels) + ["</s>"]
    out_tokens = [tgt_label(t) for t in produced] + ["</s>"]  # row t is the step that produced token t
    in_tokens = ["<s>"] + out_tokens[:-1]
    return [
        _grid(
            enc.weights,
            "self",
            src_tokens,
            src_tokens,
            out / "encoder_self_attention.png",
            "Encoder self-attention (rows attend to columns)",
            layer,
            head,
        ),
        _grid(
            dec.weights,
            "self",
            out_tokens,
            in_tokens,
            out / "decoder_self_attention.png",
            "Decoder masked self-attention (rows produce, columns are the decoder's inputs)",
            layer,
            head,
        ),
        _grid(
            dec.weights,
            "cross",
            out_tokens,
            src_tokens,
            out / "cross_attention.png",
            "Encoder-decoder attention (rows produce, columns are source tokens)",
            layer,
            head,
        ),
    ]


@torch.inference_mode()
def plot_gpt(model, ids: list[int], labels, out: Path, layer=None, head=None) -> list[Path]:
    """Causal self-attention of a GPT over `ids`."""
    weights = model(torch.tensor([ids]), need_weights=True).weights
    title = "GPT causal self-attention (rows attend to columns)"
    return [_grid(weights, "self", labels, labels, out / "self_attention.png", title, layer, head)]


@torch.inference_mode()
def plot_bert(model, ids: list[int], labels, out: Path, layer=None, head=None) -> list[Path]:
    """Bidirectional self-attention of a BERT over `ids` ([CLS] ... [SEP])."""
    weights = model(torch.tensor([ids]), need_weights=True).weights
    title = "BERT self-attention, bidirectional (rows attend to columns)"
    return [_grid(weights, "self", labels, labels, out / "self_attention.png", title, layer, head)]
