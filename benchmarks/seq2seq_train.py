"""Encoder-decoder training speed against MarianMTModel and torch.nn.Transformer, and model FLOPs
utilisation against the matrix-multiply peak measured in the same run.

    python benchmarks/seq2seq_train.py

Shape of the Multi30k CPU config: d_model 256, d_ff 1024, 3+3 layers, 8 heads, shared vocab 8,000,
64 sentences of 24 source and 24 target tokens, dropout 0.1, label smoothing 0.1, Adam.
One step = forward, loss, backward, optimiser step: every contender's Adam is PyTorch's fused kernel
(`fused=True`), the one qkv's trainer and `transformers`' Trainer (torch 2.8 on) both use by default.
Tokens/s counts source + target tokens. Each contender's loss is the label-smoothed cross-entropy it
trains with: qkv's own criterion (`qkv.train.losses`), and for the references PyTorch's
`F.cross_entropy(label_smoothing=0.1)`, the same numbers and faster than `transformers`' own
`LabelSmoother` (benchmarks/levers/smoothed_loss.py).
--dtype bfloat16 runs every contender's forward and loss under bf16 autocast (weights and optimiser
fp32, as `train.precision = "bf16"`), and MFU is then against the bf16 matrix-multiply peak.
--device cuda runs the same on the GPU (there --batch 512 fills the chip better than the CPU's 64);
--compile MODE runs all three through torch.compile; --shape base is the paper's base model instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, device_argument, report, timed  # noqa: E402

from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig  # noqa: E402
from qkv.nn.embeddings import sinusoid_table  # noqa: E402
from qkv.train.losses import label_smoothed_cross_entropy, output_smoothed_cross_entropy  # noqa: E402


class Shape(NamedTuple):
    d: int
    ff: int
    layers: int  # encoder layers = decoder layers
    heads: int
    vocab: int  # shared by source and target
    src_len: int  # tokens per source sentence
    tgt_len: int


SHAPES = {
    "multi30k": Shape(256, 1024, 3, 8, 8000, 24, 24),  # the Multi30k CPU config (the shape)
    "base": Shape(512, 2048, 6, 8, 37000, 32, 32),  # the paper's base model (Table 3), for a GPU
}


def qkv_model(x: Shape):
    return EncoderDecoder(
        Seq2SeqConfig(
            x.vocab,
            x.vocab,
            d_model=x.d,
            n_heads=x.heads,
            n_encoder_layers=x.layers,
            n_decoder_layers=x.layers,
            d_ff=x.ff,
            dropout=0.1,
        )
    )


def marian_model(x: Shape):
    import transformers

    cfg = transformers.MarianConfig(
        vocab_size=x.vocab,
        decoder_vocab_size=x.vocab,
        d_model=x.d,
        encoder_layers=x.layers,
        decoder_layers=x.layers,
        encoder_attention_heads=x.heads,
        decoder_attention_heads=x.heads,
        encoder_ffn_dim=x.ff,
        decoder_ffn_dim=x.ff,
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

    def __init__(self, x: Shape):
        super().__init__()
        self.embed = nn.Embedding(x.vocab, x.d)
        self.register_buffer("pe", sinusoid_table(64, x.d))
        self.core = nn.Transformer(x.d, x.heads, x.layers, x.layers, x.ff, dropout=0.1, batch_first=True)
        self.out = nn.Linear(x.d, x.vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, src, tgt):
        e = lambda x: self.embed(x) * math.sqrt(self.embed.embedding_dim) + self.pe[: x.size(1)]  # noqa: E731
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), device=tgt.device)
        h = self.core(
            e(src),
            e(tgt),
            tgt_mask=mask,
            tgt_is_causal=True,
            src_key_padding_mask=src == 0,
            memory_key_padding_mask=src == 0,
        )
        return self.out(h)


def step_flops(x: Shape, b: int) -> float:
    """Matrix-multiply FLOPs of one training step of b sentence pairs (forward x 3 for forward + backward)."""
    D, FF, LAYERS, V, S, T = x.d, x.ff, x.layers, x.vocab, x.src_len, x.tgt_len
    enc = LAYERS * (4 * D * D + 2 * D * FF) * S + LAYERS * 2 * S * S * D  # projections + QK^T, AV
    dec = (
        LAYERS * (4 * D * D + 2 * D * FF + 2 * D * D) * T + LAYERS * 2 * D * D * S
    )  # self, ffn, cross q/out; cross k/v
    dec += LAYERS * (2 * T * T * D + 2 * T * S * D) + D * V * T  # self and cross attention scores/values; output layer
    return 3 * 2 * b * (enc + dec)


def matmul_peaks(dtype: torch.dtype, device: str, reps: int = 10) -> dict[str, float]:
    """FLOP/s of a large square product through `torch.matmul` (the issue's definition of the peak),
    and on a CPU in fp32 also through oneDNN's kernel, which qkv's linear layers may use
    (`qkv.nn.linear`) and which on a non-Intel processor runs about twice as fast as MKL's."""
    n = 8192 if device == "cuda" else 2048  # a GPU needs the larger product to reach its peak
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    products = {"torch_matmul": lambda: torch.matmul(a, b)}
    if device == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available():
        products["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")  # a @ b^T
    peaks = {}
    for name, product in products.items():
        product()
        peaks[name] = reps * 2 * n**3 / timed(lambda: [product() for _ in range(reps)])
    return peaks


def pytorch_loss(logits, target):
    return F.cross_entropy(logits.flatten(0, 1), target.reshape(-1), ignore_index=0, label_smoothing=0.1)


def qkv_loss(logits, target):
    loss, n = label_smoothed_cross_entropy(logits, target, 0.1, 0)
    return loss / n  # the mean, as the references'


def qkv_step(model: nn.Module, forward=None) -> tuple:
    """(states_of, criterion) for `contender`: qkv's step as its translation task takes it
    (`qkv.tasks.translation.translation_loss`). The model stops before its output layer, and the
    criterion applies that layer a block of rows at a time with the loss, never holding all the scores."""
    forward = forward or model

    def criterion(states, target):
        loss, n = output_smoothed_cross_entropy(states, model.output.weight, model.output.bias, target, 0.1, 0)
        return loss / n  # the mean, as the references'

    return (lambda s, t: forward(s, t, output_layer=False)), criterion


def contender(model: nn.Module, logits_of, steps: int, batches, dtype: torch.dtype, criterion=pytorch_loss):
    device = next(model.parameters()).device
    # fused: what qkv's trainer and `transformers`' Trainer (default optim "adamw_torch_fused") both run
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
    model.train()

    def run() -> float:
        def loop():
            for src, tgt_in, tgt_out in batches[:steps]:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    loss = criterion(logits_of(src, tgt_in).float(), tgt_out)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        return steps * (batches[0][0].numel() + batches[0][1].numel()) / timed(loop)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch", type=int, default=64, help="sentence pairs per step (default: 64)")
    parser.add_argument("--shape", choices=list(SHAPES), default="multi30k", help="model shape (default: multi30k)")
    parser.add_argument(
        "--compile",
        choices=["off", "default", "reduce-overhead"],
        default="off",
        help="run every contender through torch.compile in this mode (default: off)",
    )
    device_argument(parser)
    args = parser.parse_args()
    b, x = args.batch, SHAPES[args.shape]
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randint(3, x.vocab, (b, x.src_len), generator=g).to(args.device),
            torch.randint(3, x.vocab, (b, x.tgt_len), generator=g).to(args.device),
            torch.randint(3, x.vocab, (b, x.tgt_len), generator=g).to(args.device),
        )
        for _ in range(args.steps)
    ]
    ours, marian, torch_tf = (m.to(args.device) for m in (qkv_model(x), marian_model(x), TorchTransformer(x)))
    # with --compile every contender runs through torch.compile (the same mode), each warmed up once
    # before the timed rounds so that no round pays for compiling
    fwd = {m: m if args.compile == "off" else torch.compile(m, mode=args.compile) for m in (ours, marian, torch_tf)}
    states_of, qkv_criterion = qkv_step(ours, fwd[ours])
    contenders = {
        "qkv": contender(ours, states_of, args.steps, batches, dtype, qkv_criterion),
        "marian": contender(
            marian, lambda s, t: fwd[marian](input_ids=s, decoder_input_ids=t).logits, args.steps, batches, dtype
        ),
        "nn_transformer": contender(torch_tf, lambda s, t: fwd[torch_tf](s, t), args.steps, batches, dtype),
    }
    if args.compile != "off":
        for run in contenders.values():
            run()
    before = matmul_peaks(dtype, args.device)
    rates = alternate(contenders, args.rounds)
    peaks = {k: max(v, before[k]) for k, v in matmul_peaks(dtype, args.device).items()}
    # MFU against the fastest product measured: where qkv's products outrun torch.matmul (oneDNN on
    # a non-Intel CPU), torch.matmul's peak alone would put MFU above what the hardware delivers
    peak = max(peaks.values())
    flops_per_token = step_flops(x, b) / (b * (x.src_len + x.tgt_len))
    mfu = {k: v * flops_per_token / peak for k, v in rates.items()}
    mfu_torch = {k: v * flops_per_token / peaks["torch_matmul"] for k, v in rates.items()}
    report(
        "seq2seq_train_tokens_per_s",
        "tokens/s",
        rates,
        "marian",
        dtype=args.dtype if args.dtype == "float32" else "bfloat16 autocast (fp32 weights)",
        compile=args.compile,
        ratio_vs_nn_transformer=round(rates["qkv"] / rates["nn_transformer"], 3),
        mfu={k: round(v, 3) for k, v in mfu.items()},
        matmul_peak_gflops=round(peak / 1e9, 1),
        matmul_peaks_gflops={k: round(v / 1e9, 1) for k, v in peaks.items()},
        mfu_vs_torch_matmul={k: round(v, 3) for k, v in mfu_torch.items()},
        shape=f"{args.shape}: d {x.d}, ff {x.ff}, {x.layers}+{x.layers} layers, {x.heads} heads, vocab {x.vocab}, "
        f"{b} x ({x.src_len}+{x.tgt_len}) tokens",
    )


if __name__ == "__main__":
    main()
