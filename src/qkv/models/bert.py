"""The encoder-only BERT (Devlin et al., 2019): token + position + segment embeddings with LayerNorm,
a bidirectional post-LN encoder built from the shared blocks, a pooler on [CLS], and one head chosen
by the config: pre-training (masked LM + next-sentence prediction, sec 3.1), or a fine-tuning head
for sequence classification, token classification or extractive question answering (sec 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv.config import Config, require
from qkv.nn.block import Activation, BlockSpec, NormPlacement, Stack, dropout
from qkv.nn.embeddings import LearnedPositions
from qkv.nn.linear import Linear, linear
from qkv.nn.masks import attention_mask, padding_mask

BertHead = Literal["pretraining", "sequence_classification", "token_classification", "question_answering"]


@dataclass(frozen=True)
class BertConfig(Config):
    """Defaults are BERT-base (110M): 12 layers, 12 heads, width 768, 512 positions, 2 segments."""

    vocab_size: int = 30522
    max_len: int = 512
    n_segments: int = 2
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: Activation = "gelu"
    norm_placement: NormPlacement = "post"
    norm_eps: float = 1e-12
    head: BertHead = "pretraining"
    n_labels: int = 2  # classes of the classification heads
    pad_id: int = 0

    def validate(self) -> None:
        BlockSpec.check(self)
        for name in ("vocab_size", "max_len", "n_segments", "d_model", "n_layers", "d_ff", "n_labels"):
            require(getattr(self, name) > 0, f"{name} must be positive", key=name)


class BertEmbeddings(nn.Module):
    """(B, T) tokens and segments -> (B, T, D): LayerNorm(token + position + segment), then dropout."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(c.vocab_size, c.d_model)
        self.positions = LearnedPositions(c.d_model, c.max_len)
        self.segments = nn.Embedding(c.n_segments, c.d_model)
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, tokens: Tensor, segments: Tensor) -> Tensor:
        x = self.tokens(tokens) + self.positions(0, tokens.size(1)) + self.segments(segments)
        return dropout(self.dropout, self.norm(x))


class MaskedLMHead(nn.Module):
    """Transform (dense + GELU + LayerNorm), then the decoder tied to the token embedding, plus a bias."""

    def __init__(self, c: BertConfig, embedding: nn.Parameter) -> None:
        super().__init__()
        self.transform = Linear(c.d_model, c.d_model)
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.weight = embedding  # tied (sec 3.1 follows the Transformer's shared output projection)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, h: Tensor) -> Tensor:
        return linear(self.norm(F.gelu(self.transform(h))), self.weight, self.bias)  # (B, T, V)


class BertOutput(NamedTuple):
    logits: (
        Tensor  # pretraining: masked-LM (B, T, V); classification (B, n_labels); tokens (B, T, n_labels); QA (B, T, 2)
    )
    nsp_logits: Tensor | None  # pretraining: is-next (index 0) vs random (index 1), (B, 2)
    hidden: Tensor  # (B, T, D) encoder output
    weights: list | None


class Bert(nn.Module):
    family = "bert"

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = BertEmbeddings(c)
        self.encoder = Stack(BlockSpec.of(c), c.n_layers, cross=False)
        self.pooler = Linear(c.d_model, c.d_model)  # tanh(W h_[CLS] + b)
        self.head_dropout = nn.Dropout(c.dropout)
        if c.head == "pretraining":
            self.mlm = MaskedLMHead(c, self.embed.tokens.weight)
            self.nsp = Linear(c.d_model, 2)
        elif c.head == "question_answering":
            self.qa = Linear(c.d_model, 2)  # start and end logits per token
        else:
            self.classifier = Linear(c.d_model, c.n_labels)
        self._init_weights()

    def _init_weights(self) -> None:
        # BERT: N(0, 0.02) for every matrix and embedding, zero biases, LayerNorm at identity.
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            elif "norm" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def encode(self, tokens: Tensor, segments: Tensor | None = None, need_weights: bool = False):
        """tokens: (B, T) padded with pad_id; segments: (B, T) of 0/1 (default all 0) -> (B, T, D)."""
        segments = torch.zeros_like(tokens) if segments is None else segments
        mask, _ = attention_mask(
            padding_mask(tokens, self.config.pad_id), False, tokens.size(1), tokens.size(1), tokens.device
        )
        return self.encoder(self.embed(tokens, segments), mask, False, need_weights=need_weights)

    def forward(
        self,
        tokens: Tensor,
        segments: Tensor | None = None,
        need_weights: bool = False,
        predict: Tensor | None = None,
    ) -> BertOutput:
        """predict: optional (B, T) bool, the masked positions; the masked-LM logits are then (N, V) for
        those N positions only. Pre-training needs no others, and the vocabulary projection is about 40% of
        a small model's FLOPs, so this makes a pre-training step about 1.4x faster."""
        h, weights = self.encode(tokens, segments, need_weights)
        pooled = torch.tanh(self.pooler(h[:, 0]))  # (B, D) from the [CLS] position
        head = self.config.head
        if head == "pretraining":
            return BertOutput(self.mlm(h if predict is None else h[predict]), self.nsp(pooled), h, weights)
        if head == "sequence_classification":
            return BertOutput(self.classifier(dropout(self.head_dropout, pooled)), None, h, weights)
        if head == "token_classification":
            return BertOutput(self.classifier(dropout(self.head_dropout, h)), None, h, weights)
        return BertOutput(self.qa(h), None, h, weights)


PRESETS = {
    "bert-base": BertConfig(),
    "bert-large": BertConfig(d_model=1024, n_heads=16, n_layers=24, d_ff=4096),
    "bert-small": BertConfig(vocab_size=8000, max_len=128, d_model=256, n_heads=4, n_layers=4, d_ff=1024),
    "bert-mini": BertConfig(vocab_size=8000, max_len=128, d_model=128, n_heads=2, n_layers=2, d_ff=512),
}
