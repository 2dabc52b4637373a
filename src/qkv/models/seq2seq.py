"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017, sec 3).

`encode` and `decode` are separate so that decoding can run the encoder once and the decoder one
token at a time with a `KVCache`; `forward` is the teacher-forced pass used in training (sec 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from torch import Tensor, nn

from qkv.config import Config, require
from qkv.nn.attention import AttentionScale
from qkv.nn.block import Activation, BlockSpec, Norm, NormPlacement, Residual, Stack
from qkv.nn.cache import KVCache
from qkv.nn.embeddings import Embeddings, PositionScheme
from qkv.nn.linear import Linear
from qkv.nn.masks import attention_mask, padding_mask


@dataclass(frozen=True)
class Seq2SeqConfig(Config):
    """Shape and behaviour of an encoder-decoder model. Defaults are the paper's base model (Table 3)."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1  # P_drop (sec 5.4)
    attention_dropout: float = 0.0  # not in the paper; some reimplementations add it
    activation: Activation = "relu"
    norm_placement: NormPlacement = "post"  # the paper's LayerNorm(x + Sublayer(x))
    norm_eps: float = 1e-6
    positions: PositionScheme = "sinusoidal"
    max_len: int = 1024  # learned positions; the sinusoid table grows past it
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model) (sec 3.4)
    share_embeddings: bool = True  # one matrix for source and target embeddings (sec 3.4)
    tie_output: bool = True  # the pre-softmax projection reuses the target embedding (sec 3.4)
    output_bias: bool = False  # a bias on the logits (not in the paper; Marian's opus-mt models have one)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    # Ablations of the paper's choices, for the experiments (docs/EXPERIMENTS.md); keep the defaults.
    attention_scale: AttentionScale = "sqrt_dk"  # experiment 1: "none" drops the 1/sqrt(d_k) of eq. (1)
    decoder_mask: Literal["causal", "none"] = "causal"  # experiment 3: "none" lets training see the future
    residual: Residual = "add"  # experiment 4
    norm: Norm = "layer"  # experiment 8

    @property
    def position_limit(self) -> int | None:
        """The most positions a source or target may have: max_len with learned positions (one trained
        vector each), None otherwise (the sinusoid is defined at every position, sec 3.5)."""
        return self.max_len if self.positions == "learned" else None

    def validate(self) -> None:
        BlockSpec.check(self)
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "max_len"):
            require(getattr(self, name) > 0, f"{name} must be positive", key=name)
        require(self.n_encoder_layers >= 0 and self.n_decoder_layers >= 1, "need >= 0 encoder and >= 1 decoder layers")
        require(
            not self.share_embeddings or self.src_vocab_size == self.tgt_vocab_size,
            "share_embeddings needs src_vocab_size == tgt_vocab_size",
        )
        for name in ("pad_id", "bos_id", "eos_id"):
            require(0 <= getattr(self, name) < self.tgt_vocab_size, f"{name} is outside the target vocabulary")


class Encoded(NamedTuple):
    memory: Tensor  # (B, S, D) encoder output
    src_mask: Tensor  # (B, 1, 1, S) True at real source tokens
    weights: list | None  # per layer {"self": (B, H, S, S)} when asked


class Decoded(NamedTuple):
    logits: Tensor  # (B, T, V_tgt)
    cache: KVCache | None
    weights: list | None  # per layer {"self": (B, H, T, T_k), "cross": (B, H, T, S)} when asked


class EncoderDecoder(nn.Module):
    family = "seq2seq"

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        spec = BlockSpec.of(c)
        self.src_embed = Embeddings(c.src_vocab_size, c.d_model, c.positions, c.max_len, c.dropout, c.scale_embeddings)
        self.tgt_embed = Embeddings(c.tgt_vocab_size, c.d_model, c.positions, c.max_len, c.dropout, c.scale_embeddings)
        self.encoder = Stack(spec, c.n_encoder_layers, cross=False)
        self.decoder = Stack(spec, c.n_decoder_layers, cross=True)
        self.output = Linear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)
        self._init_weights()
        if c.share_embeddings:
            self.tgt_embed.tokens.weight = self.src_embed.tokens.weight
        if c.tie_output:
            self.output.weight = self.tgt_embed.tokens.weight

    def _init_weights(self) -> None:
        # The paper gives no initialisation; Glorot-uniform matrices and zero biases are the usual
        # choice of its reference implementations, and train stably with post-LN and warm-up.
        for name, p in self.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                nn.init.xavier_uniform_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
        if not self.config.tie_output:
            nn.init.normal_(self.output.weight, std=self.config.d_model**-0.5)

    def encode(self, src: Tensor, need_weights: bool = False) -> Encoded:
        """src: (B, S) token ids, padded with pad_id -> memory (B, S, D)."""
        src_mask = padding_mask(src, self.config.pad_id)
        mask, _ = attention_mask(src_mask, False, src.size(1), src.size(1), src.device)
        memory, weights = self.encoder(self.src_embed(src), mask, False, need_weights=need_weights)
        return Encoded(memory, src_mask, weights)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_mask: Tensor,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> Decoded:
        """tgt: (B, T) target ids (shifted right: starting with BOS) -> logits (B, T, V_tgt).

        With a cache, `tgt` holds only the positions after those already cached; the cache is updated
        in place and returned. Target padding needs no key mask: causality already hides every later
        position, and the loss ignores padded positions.
        """
        x, weights = self.decoder_states(tgt, memory, src_mask, cache, need_weights)
        return Decoded(self.output(x), cache, weights)

    def decoder_states(
        self, tgt: Tensor, memory: Tensor, src_mask: Tensor, cache: KVCache | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list | None]:
        """`decode` up to the output layer: (B, T, D) states, and the attention weights when asked (greedy
        decoding applies `self.output` itself, `qkv.decoding.argmax`)."""
        offset = cache.length if cache is not None else 0
        t_q = tgt.size(1)
        # sec 3.2.3: the mask stops leftward information flow; "none" exists only for experiment 3
        causal = self.config.decoder_mask == "causal"
        mask, is_causal = attention_mask(None, causal, t_q, offset + t_q, tgt.device)
        x = self.tgt_embed(tgt, offset)
        return self.decoder(x, mask, is_causal, memory, src_mask, cache, need_weights)

    def forward(self, src: Tensor, tgt: Tensor, output_layer: bool = True) -> Tensor:
        """Teacher forcing: src (B, S), tgt (B, T) -> logits (B, T, V_tgt). With output_layer=False, the
        decoder's output (B, T, D) before the output layer, for a criterion that applies `self.output`
        itself (`qkv.train.losses.output_smoothed_cross_entropy`, which never holds all the scores)."""
        enc = self.encode(src)
        if output_layer:
            return self.decode(tgt, enc.memory, enc.src_mask).logits
        return self.decoder_states(tgt, enc.memory, enc.src_mask, None, False)[0]

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_decoder_layers)


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def base_config(vocab_size: int = 37000) -> Seq2SeqConfig:
    """The paper's base model (Table 3, row "base") with a shared source/target vocabulary."""
    return Seq2SeqConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size)


def big_config(vocab_size: int = 37000) -> Seq2SeqConfig:
    """The paper's big model (Table 3): d_model 1024, d_ff 4096, 16 heads, P_drop 0.3 (0.1 for en-fr)."""
    return Seq2SeqConfig(vocab_size, vocab_size, d_model=1024, n_heads=16, d_ff=4096, dropout=0.3)


def small_config(vocab_size: int = 8000) -> Seq2SeqConfig:
    """A CPU-sized model: 3+3 layers of width 256, trains on Multi30k-sized data in under an hour."""
    return Seq2SeqConfig(
        vocab_size, vocab_size, d_model=256, n_heads=8, n_encoder_layers=3, n_decoder_layers=3, d_ff=1024
    )


PRESETS = {"base": base_config(), "big": big_config(), "small": small_config()}  # vocab sizes are set by the data
