"""Encoder-decoder training speed against MarianMTModel and torch.nn.Transformer, and model FLOPs
utilisation against the matrix-multiply peak measured in the same run.

    python benchmarks/seq2seq_train.py

Shape of the Multi30k CPU config: d_model 256, d_ff 1024, 3+3 layers, 8 heads, shared vocab 8,000,
64 sentences of 24 source and 24 target tokens, dropout 0.1, label smoothing 0.1, Adam.
One step = forward, loss, backward, optimiser step. Tokens/s counts source + target tokens.
--dtype bfloat16 runs every contender's forward and loss under bf16 autocast (weights and optimiser
fp32, as `train.precision = "bf16"`), and MFU is then against the bf16 matrix-multiply peak.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, report, timed  # noqa: E402

from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig  # noqa: E402
from qkv.nn.embeddings import sinusoid_table  # noqa: E402

D, FF, LAYERS, HEADS, V, B, S, T = 256, 1024, 3, 8, 8000, 64, 24, 24


def qkv_model():
    return EncoderDecoder(
        Seq2SeqConfig(
            V, V, d_model=D, n_heads=HEADS, n_encoder_layers=LAYERS, n_decoder_layers=LAYERS, d_ff=FF, dropout=0.1
        )
    )


def marian_model():
    import transformers

    cfg = transformers.MarianConfig(
        vocab_size=V,
        decoder_vocab_size=V,
        d_model=D,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FF,
        decoder_ffn_dim=FF,
        activation_function="relu",
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_position_embeddings=64,
        scale_embedding=True,
        pad_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=1,
        share_encoder_decoder_embeddings=True,
    )
    return transformers.MarianMTModel(cfg)


class TorchTransformer(nn.Module):
    """torch.nn.Transformer with the embeddings, sinusoidal positions and tied output layer it lacks."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.register_buffer("pe", sinusoid_table(64, D))
        self.core = nn.Transformer(D, HEADS, LAYERS, LAYERS, FF, dropout=0.1, batch_first=True)
        self.out = nn.Linear(D, V, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, src, tgt):
        e = lambda x: self.embed(x) * math.sqrt(D) + self.pe[: x.size(1)]  # noqa: E731
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        h = self.core(
            e(src),
            e(tgt),
            tgt_mask=mask,
            tgt_is_causal=True,
            src_key_padding_mask=src == 0,
            memory_key_padding_mask=src == 0,
        )
        return self.out(h)


def step_flops() -> float:
    """Matrix-multiply FLOPs of one training step (forward x 3 for forward + backward)."""
    enc = LAYERS * (4 * D * D + 2 * D * FF) * S + LAYERS * 2 * S * S * D  # projections + QK^T, AV
    dec = (
        LAYERS * (4 * D * D + 2 * D * FF + 2 * D * D) * T + LAYERS * 2 * D * D * S
    )  # self, ffn, cross q/out; cross k/v
    dec += LAYERS * (2 * T * T * D + 2 * T * S * D) + D * V * T  # self and cross attention scores/values; output layer
    return 3 * 2 * B * (enc + dec)


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    return reps * 2 * n**3 / timed(lambda: [torch.matmul(a, b) for _ in range(reps)])


def contender(model: nn.Module, logits_of, steps: int, batches, dtype: torch.dtype):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    model.train()

    def run() -> float:
        def loop():
            for src, tgt_in, tgt_out in batches[:steps]:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    logits = logits_of(src, tgt_in).float()
                    loss = F.cross_entropy(
                        logits.reshape(-1, V), tgt_out.reshape(-1), ignore_index=0, label_smoothing=0.1
                    )
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        return steps * B * (S + T) / timed(loop)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randint(3, V, (B, S), generator=g),
            torch.randint(3, V, (B, T), generator=g),
            torch.randint(3, V, (B, T), generator=g),
        )
        for _ in range(args.steps)
    ]
    ours, marian, torch_tf = qkv_model(), marian_model(), TorchTransformer()
    peak_before = matmul_peak(dtype)
    rates = alternate(
        {
            "qkv": contender(ours, lambda s, t: ours(s, t), args.steps, batches, dtype),
            "marian": contender(
                marian, lambda s, t: marian(input_ids=s, decoder_input_ids=t).logits, args.steps, batches, dtype
            ),
            "nn_transformer": contender(torch_tf, lambda s, t: torch_tf(s, t), args.steps, batches, dtype),
        },
        args.rounds,
    )
    peak = max(peak_before, matmul_peak(dtype))
    flops_per_token = step_flops() / (B * (S + T))
    mfu = {k: v * flops_per_token / peak for k, v in rates.items()}
    report(
        "seq2seq_train_tokens_per_s",
        "tokens/s",
        rates,
        "marian",
        dtype=args.dtype if args.dtype == "float32" else "bfloat16 autocast (fp32 weights)",
        ratio_vs_nn_transformer=round(rates["qkv"] / rates["nn_transformer"], 3),
        mfu={k: round(v, 3) for k, v in mfu.items()},
        matmul_peak_gflops=round(peak / 1e9, 1),
        shape=f"d {D}, ff {FF}, {LAYERS}+{LAYERS} layers, {HEADS} heads, vocab {V}, {B} x ({S}+{T}) tokens",
    )


if __name__ == "__main__":
    main()
