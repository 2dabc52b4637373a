"""The one Transformer block and stack shared by all three families (STYLE principle 1).

A block is self-attention, optional cross-attention (the encoder-decoder's decoder) and a position-wise
feed-forward network, each wrapped in dropout + residual + LayerNorm (sec 3.1, 5.4). The encoder,
the decoder, BERT and GPT differ only in which masks they pass and whether `cross` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.nn import dropout_norm, native
from qkv.nn.attention import AttentionScale, CrossAttention, SelfAttention
from qkv.nn.cache import KVCache, StaticKVCache
from qkv.nn.dropout import dropout as native_dropout
from qkv.nn.gelu import gelu_tanh
from qkv.nn.linear import Linear

Activation = Literal["relu", "gelu", "gelu_tanh", "silu"]
NormPlacement = Literal["post", "pre"]
Residual = Literal["add", "none"]  # "none" only for experiment 4 (what residual connections are for)
Norm = Literal["layer", "batch"]  # "batch" only for experiment 8 (why LayerNorm)

# a sub-layer: (input, whether to add its last projection's bias) -> (output, attention weights or None)
Sublayer = Callable[[Tensor, bool], tuple[Tensor, Tensor | None]]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,  # the paper's FFN, eq. (2)
    "gelu": F.gelu,  # BERT
    "gelu_tanh": gelu_tanh,  # GPT-2 (a compiled kernel on the CPU: qkv.nn.gelu)
    "silu": F.silu,  # x * sigmoid(x), Marian's "swish" (the opus-mt translation models)
}


@dataclass(frozen=True)
class BlockSpec:
    """The settings every block of a stack shares; model configs derive one (same names everywhere)."""

    d_model: int
    n_heads: int
    d_ff: int
    dropout: float
    attention_dropout: float
    activation: Activation
    norm_placement: NormPlacement
    norm_eps: float
    # Ablations for the experiments (docs/EXPERIMENTS.md). Only Seq2SeqConfig carries these fields (so
    # `of` takes them when present); GPT and BERT always get the paper's choices, the defaults here.
    attention_scale: AttentionScale = "sqrt_dk"
    residual: Residual = "add"
    norm: Norm = "layer"

    @staticmethod
    def check(config) -> None:
        """The validation every model config needs for its block fields (raises ConfigError)."""
        from qkv.config import require

        require(
            config.d_model % config.n_heads == 0,
            f"d_model={config.d_model} is not divisible by n_heads={config.n_heads}",
        )
        for name in ("d_model", "n_heads", "d_ff"):
            require(getattr(config, name) > 0, f"{name} must be positive", key=name)
        for name in ("dropout", "attention_dropout"):
            require(0.0 <= getattr(config, name) < 1.0, f"{name} must be in [0, 1)", key=name)

    @classmethod
    def of(cls, config) -> "BlockSpec":
        """The block settings of any model config (every family uses these same field names)."""
        fields = cls.__dataclass_fields__
        return cls(**{name: getattr(config, name) for name in fields if hasattr(config, name)})


class BatchNorm(nn.Module):
    """BatchNorm over the features of (B, T, D), statistics across all B*T positions (experiment 8).
    Unlike LayerNorm it mixes examples and positions: in training a position's output depends on
    the rest of the batch, later positions included, which a causal model must not see."""

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(d_model, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(x.reshape(-1, x.size(-1))).view_as(x)  # (B*T, D) -> (B, T, D)


def dropout(module: nn.Dropout, x: Tensor) -> Tensor:
    """`module`'s dropout of x through qkv's kernel (`qkv.nn.dropout`), skipped where it is the identity
    (evaluation, or p = 0): a decoding step would otherwise pay a call for nothing nine times a token
    in a 4-layer GPT."""
    return native_dropout(x, module.p) if module.training and module.p > 0 else x


def make_norm(spec: BlockSpec) -> nn.Module:
    return nn.LayerNorm(spec.d_model, eps=spec.norm_eps) if spec.norm == "layer" else BatchNorm(spec.d_model, 1e-5)


def residual_norm(norm: nn.Module, skip: Tensor | float | None, y: Tensor) -> Tensor:
    """norm(skip + y), sec 3.1's LayerNorm(x + Sublayer(x)), or norm(y) where skip is None (a pre-LN
    block's norms). Without gradients, on float32 CPU tensors, one compiled pass (`layer_norm.cpp`):
    7 against 15 us for a decoding step's 64 x 256, where the add and the norm are two calls of mostly
    fixed cost; 1 against 6 us for norm(y) of one row of 128 (the small GPT's decoding step)."""
    if type(norm) is nn.LayerNorm and (skip is None or isinstance(skip, Tensor) and skip.shape == y.shape):
        w, b = norm.weight, norm.bias
        if (
            w is not None
            and b is not None
            and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (skip, y, w, b)))
            and native.applies(y)
            and (skip is None or native.same_kind(y, skip))
            and (fused := native.kernel("add_layer_norm")) is not None
        ):
            return fused(y, skip, w, b, norm.eps)  # y + skip: the same sum as skip + y, bit for bit
    return norm(y) if skip is None else norm(skip + y)


class FeedForward(nn.Module):
    """FFN(x) = act(x W1 + b1) W2 + b2, applied to each position alone (sec 3.3, eq. 2)."""

    def __init__(self, d_model: int, d_ff: int, activation: Activation) -> None:
        super().__init__()
        self.up = Linear(d_model, d_ff)
        self.down = Linear(d_ff, d_model)
        self.act = _ACTIVATIONS[activation]
        self.relu = activation == "relu"  # applied inside the up projection where its kernel can (linear)

    def forward(self, x: Tensor, out_bias: bool = True) -> Tensor:
        """out_bias=False leaves b2 out, for a caller that adds it in its own next pass."""
        h = self.up(x, relu=True) if self.relu else self.act(self.up(x))
        return self.down(h, add_bias=out_bias)


class TransformerBlock(nn.Module):
    """One layer. Post-LN (the paper): x = LN(x + Drop(f(x))). Pre-LN: x = x + Drop(f(LN(x)))."""

    def __init__(self, spec: BlockSpec, cross: bool) -> None:
        super().__init__()
        d = spec.d_model
        self.pre_norm = spec.norm_placement == "pre"
        self.residual = spec.residual == "add"
        self.self_attn = SelfAttention(d, spec.n_heads, spec.attention_dropout, spec.attention_scale)
        self.norm_self = make_norm(spec)
        self.cross_attn = (
            CrossAttention(d, spec.n_heads, spec.attention_dropout, spec.attention_scale) if cross else None
        )
        self.norm_cross = make_norm(spec) if cross else None
        self.ff = FeedForward(d, spec.d_ff, spec.activation)
        self.norm_ff = make_norm(spec)
        self.dropout = nn.Dropout(spec.dropout)

    def _sublayer(self, norm: nn.LayerNorm, x: Tensor, f: Sublayer, last: nn.Linear):
        """Residual connection around f with the configured LayerNorm placement (sec 3.1: LN(x + f(x))).
        f(h, out_bias) is the sub-layer; `last` its final projection, whose bias the compiled residual
        pass adds where it applies (f then leaves it out)."""
        skip = x if self.residual else 0.0
        if self.pre_norm:
            y, w = f(residual_norm(norm, None, x), True)
            return skip + dropout(self.dropout, y), w
        p = self.dropout.p if self.training else 0.0
        if dropout_norm.applies(norm, skip, x, p, last.bias):  # training: bias, dropout, add, norm in one pass
            y, w = f(x, False)
            return dropout_norm.dropout_add_layer_norm(norm, skip, y, p, last.bias), w
        y, w = f(x, True)
        return residual_norm(norm, skip, dropout(self.dropout, y)), w

    def forward(self, x, self_mask, is_causal, memory=None, cross_mask=None, cache=None, need_weights=False):
        """x: (B, T, D) -> (B, T, D) and {"self": (B, H, T, T_k), "cross": (B, H, T, S)} when weights are asked."""
        x, w_self = self._sublayer(
            self.norm_self,
            x,
            lambda h, b: self.self_attn(h, self_mask, is_causal, cache, need_weights, out_bias=b),
            self.self_attn.out,
        )
        w_cross = None
        if self.cross_attn is not None:
            x, w_cross = self._sublayer(
                self.norm_cross,
                x,
                lambda h, b: self.cross_attn(h, memory, cross_mask, cache, need_weights, out_bias=b),
                self.cross_attn.out,
            )
        x, _ = self._sublayer(self.norm_ff, x, lambda h, b: (self.ff(h, out_bias=b), None), self.ff.down)
        return x, ({"self": w_self, "cross": w_cross} if need_weights else None)


class Stack(nn.Module):
    """N blocks; pre-LN stacks end with a LayerNorm, since their residual stream is never normalised."""

    def __init__(self, spec: BlockSpec, n_layers: int, cross: bool) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.layers = nn.ModuleList(TransformerBlock(spec, cross) for _ in range(n_layers))
        self.final_norm = make_norm(spec) if spec.norm_placement == "pre" else None

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor | None,
        is_causal: bool,
        memory: Tensor | None = None,
        cross_mask: Tensor | None = None,
        cache: KVCache | StaticKVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[dict] | None]:
        """x: (B, T, D) -> (B, T, D), plus each layer's attention weights when `need_weights`."""
        weights = [] if need_weights else None
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i] if cache is not None else None
            x, w = layer(x, self_mask, is_causal, memory, cross_mask, layer_cache, need_weights)
            if need_weights:
                weights.append(w)
        if self.final_norm is not None:
            x = residual_norm(self.final_norm, None, x)
        return x, weights
