"""The decoder-only GPT (Radford et al., 2018, 2019): token + learned positions, causal pre-LN blocks,
a final LayerNorm, and an output projection tied to the token embedding. Same blocks as the
encoder-decoder (`qkv.nn.block`); only the embeddings, the mask and the head differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor, nn

from qkv.config import Config, require
from qkv.nn.block import Activation, BlockSpec, NormPlacement, Stack
from qkv.nn.cache import KVCache, StaticKVCache
from qkv.nn.embeddings import Embeddings, PositionScheme
from qkv.nn.linear import Linear
from qkv.nn.masks import attention_mask, position_mask


@dataclass(frozen=True)
class GPTConfig(Config):
    """Defaults are GPT-2 small (124M): 12 layers, 12 heads, width 768, context 1024."""

    vocab_size: int = 50257
    block_size: int = 1024  # context window: the number of learned positions
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: Activation = "gelu_tanh"  # GPT-2's "gelu_new"
    norm_placement: NormPlacement = "pre"  # GPT-2 moved LayerNorm to each sub-block's input (2019, sec 2.3)
    norm_eps: float = 1e-5
    positions: PositionScheme = "learned"
    tie_output: bool = True

    def validate(self) -> None:
        BlockSpec.check(self)
        for name in ("vocab_size", "block_size", "d_model", "n_heads", "n_layers", "d_ff"):
            require(getattr(self, name) > 0, f"{name} must be positive", key=name)


class LMOutput(NamedTuple):
    logits: Tensor  # (B, T, V); the final states (B, T, D) with output_layer=False
    cache: KVCache | None
    weights: list | None  # per layer {"self": (B, H, T, T_k)} when asked


class GPT(nn.Module):
    family = "gpt"

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = Embeddings(c.vocab_size, c.d_model, c.positions, c.block_size, c.dropout, scale=False)
        self.blocks = Stack(BlockSpec.of(c), c.n_layers, cross=False)
        self.output = Linear(c.d_model, c.vocab_size, bias=False)
        self._init_weights()
        if c.tie_output:
            self.output.weight = self.embed.tokens.weight

    def _init_weights(self) -> None:
        # GPT-2: N(0, 0.02) everywhere, and the projections that write into the residual stream
        # scaled by 1/sqrt(2 * n_layers) so the stream's variance does not grow with depth (2019, sec 2.3).
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                std = residual_std if name.endswith(("out.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(
        self,
        tokens: Tensor,
        cache: KVCache | StaticKVCache | None = None,
        need_weights: bool = False,
        output_layer: bool = True,
    ) -> LMOutput:
        """tokens: (B, T) -> next-token logits (B, T, V). With a cache, `tokens` are the positions after
        the cached ones; the cache is updated in place and returned. A StaticKVCache says where they
        are (`cache.positions`), as tensors, so that one CUDA graph of this call serves every step.
        With output_layer=False, `logits` holds the final states (B, T, D) instead: greedy generation
        takes their argmax without every score (`qkv.decoding.argmax`)."""
        if isinstance(cache, StaticKVCache):
            mask, is_causal = position_mask(cache.positions, cache.window), False  # (1, 1, T, window)
            x = self.embed(tokens, positions=cache.positions)
        else:
            offset = cache.length if cache is not None else 0
            t = tokens.size(1)
            if offset + t > self.config.block_size:
                raise ValueError(f"sequence of {offset + t} tokens is longer than block_size={self.config.block_size}")
            mask, is_causal = attention_mask(None, True, t, offset + t, tokens.device)
            x = self.embed(tokens, offset)
        x, weights = self.blocks(x, mask, is_causal, cache=cache, need_weights=need_weights)
        return LMOutput(self.output(x) if output_layer else x, cache, weights)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layers)


PRESETS = {
    "gpt2": GPTConfig(),
    "gpt2-medium": GPTConfig(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
    # nanoGPT's documented CPU run on Tiny Shakespeare (characters): 4 layers, 4 heads, width 128, context 64.
    "char-tiny": GPTConfig(
        vocab_size=65, block_size=64, d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0, attention_dropout=0.0
    ),
    "char-small": GPTConfig(
        vocab_size=65, block_size=256, d_model=384, n_heads=6, n_layers=6, d_ff=1536, dropout=0.2, attention_dropout=0.0
    ),
}
