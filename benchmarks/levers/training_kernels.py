"""qkv's compiled kernels for the translation training step against what PyTorch offers, alternating in
one process: attention for short sequences (`qkv.nn.short_attention`, `attention.cpp`) against SDPA,
the dropout mask (`qkv.nn.dropout`, `dropout.cpp`) against `F.dropout`, and the label-smoothed loss
(`qkv.train.losses`, `smoothed_loss.cpp`) against the same criterion in PyTorch operations.

    python benchmarks/levers/training_kernels.py [--rounds 5] [--skip-training] [--output-loss-only] [--long-only]

1. One attention call, forward and forward + backward (ms), 64 sentences x 8 heads x d_k 32, at
   24 positions (the Multi30k benchmark's) to 256, with a key padding mask, and causal. `--long-only`:
   96 to 256 positions, also at 12 x 12 heads x d_k 64 (GPT-2's head size), the timings behind
   `short_attention.MAX_KEYS` and `MAX_CAUSAL_KEYS`.
2. Few queries against T keys, batch 64: one (a greedy decoding step, which stays on SDPA), two, four
   (beam 4's cross-attention folds a sentence's beams into one row of 4 queries).
3. Dropout of a 1,536 x 256 activation, forward (ms).
4. The loss over 1,536 x 8,000 scores, forward and backward (ms); and the output layer (256 -> 8,000)
   with the loss, as the layer's product followed by the loss against `output_smoothed_cross_entropy`,
   which applies the layer a block of rows at a time and never holds all the scores (ms).
5. The encoder-decoder training step of `benchmarks/seq2seq_train.py` (tokens/s) with qkv's kernels and
   with `set_kernel("pytorch")`, which turns them off (and sends every product to F.linear).
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate, environment  # noqa: E402
from seq2seq_train import SHAPES, qkv_model, qkv_step  # noqa: E402

from qkv.nn import native, short_attention  # noqa: E402
from qkv.nn.dropout import dropout  # noqa: E402
from qkv.nn.linear import linear, set_kernel  # noqa: E402
from qkv.train.losses import label_smoothed_cross_entropy, output_smoothed_cross_entropy  # noqa: E402


def per_call_ms(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


def attention_times(t_q: int, t_k: int, causal: bool, rounds: int, b: int = 64, h: int = 8, d: int = 32) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for n in (t_q, t_k, t_k))
    mask = None if causal else torch.ones(b, 1, 1, t_k, dtype=torch.bool)
    if mask is not None:
        mask[: b // 4, ..., t_k * 3 // 4 :] = False  # a quarter of the sentences padded
    go = torch.randn(b, h, t_q, d, generator=g)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    reps = max(3, 20_000 // (t_q * t_k))

    def sdpa(train: bool):
        args = leaves if train else (q, k, v)
        out = F.scaled_dot_product_attention(*args, attn_mask=mask, is_causal=causal)
        if train:
            out.backward(go)

    def qkv(train: bool):
        args = leaves if train else (q, k, v)
        out = short_attention.attention(*args, mask, causal, None)
        if train:
            out.backward(go)

    ms = alternate(
        {
            "SDPA forward": lambda: per_call_ms(lambda: sdpa(False), reps),
            "qkv forward": lambda: per_call_ms(lambda: qkv(False), reps),
            "SDPA forward+backward": lambda: per_call_ms(lambda: sdpa(True), reps),
            "qkv forward+backward": lambda: per_call_ms(lambda: qkv(True), reps),
        },
        rounds,
    )
    kind = "causal" if causal else "padding mask"
    print(
        f"{b} x {h} x {t_q} queries x {t_k} keys x {d}, {kind}: "
        + ", ".join(f"{name} {x:.3f}" for name, x in ms.items())
        + f" ms; forward {ms['SDPA forward'] / ms['qkv forward']:.2f}x, "
        f"forward+backward {ms['SDPA forward+backward'] / ms['qkv forward+backward']:.2f}x"
    )


def dropout_times(rounds: int) -> None:
    x = torch.randn(1536, 256)
    ms = alternate(
        {
            "F.dropout": lambda: per_call_ms(lambda: F.dropout(x, 0.1), 200),
            "qkv": lambda: per_call_ms(lambda: dropout(x, 0.1), 200),
        },
        rounds,
    )
    print(
        f"dropout 1536 x 256, p 0.1: F.dropout {ms['F.dropout']:.3f}, qkv {ms['qkv']:.3f} ms: "
        f"{ms['F.dropout'] / ms['qkv']:.1f}x"
    )


def loss_times(rounds: int) -> None:
    z = torch.randn(64, 24, 8000, requires_grad=True)
    target = torch.randint(1, 8000, (64, 24))

    def run(kernel: str) -> float:
        def once():
            loss, n = label_smoothed_cross_entropy(z, target, 0.1, 0)
            (loss / n).backward()
            z.grad = None

        previous = set_kernel(kernel)
        try:
            return per_call_ms(once, 10)
        finally:
            set_kernel(previous)

    ms = alternate({"pytorch": lambda: run("pytorch"), "qkv": lambda: run("auto")}, rounds)
    print(
        f"label-smoothed loss 1536 x 8000, forward+backward: PyTorch operations {ms['pytorch']:.1f}, "
        f"qkv {ms['qkv']:.1f} ms: {ms['pytorch'] / ms['qkv']:.2f}x"
    )


def output_loss_times(rounds: int) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 24, 256, generator=g, requires_grad=True)  # the decoder's output
    weight = (torch.randn(8000, 256, generator=g) * 0.05).requires_grad_()  # the tied output layer
    target = torch.randint(1, 8000, (64, 24), generator=g)

    def run(chunked: bool) -> float:
        def once():
            if chunked:
                loss, n = output_smoothed_cross_entropy(x, weight, None, target, 0.1, 0)
            else:
                loss, n = label_smoothed_cross_entropy(linear(x, weight), target, 0.1, 0)
            (loss / n).backward()
            x.grad = weight.grad = None

        return per_call_ms(once, 5)

    ms = alternate({"layer_then_loss": lambda: run(False), "chunked": lambda: run(True)}, rounds)
    print(
        f"output layer 256 -> 8000 and loss, 1536 rows, forward+backward: the layer's product then the loss "
        f"{ms['layer_then_loss']:.1f}, a block of rows at a time {ms['chunked']:.1f} ms: "
        f"{ms['layer_then_loss'] / ms['chunked']:.2f}x"
    )


def training(rounds: int, steps: int = 5) -> None:
    shape, b = SHAPES["multi30k"], 64
    torch.manual_seed(0)
    model = qkv_model(shape).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    g = torch.Generator().manual_seed(0)
    batches = [
        tuple(torch.randint(3, shape.vocab, (b, n), generator=g) for n in (shape.src_len, shape.tgt_len, shape.tgt_len))
        for _ in range(steps)
    ]

    states_of, criterion = qkv_step(model)  # as qkv's translation task trains

    def rate(kernel: str):
        def run() -> float:
            previous = set_kernel(kernel)
            try:
                start = time.perf_counter()
                for src, tgt_in, tgt_out in batches:
                    criterion(states_of(src, tgt_in), tgt_out).backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                return steps * b * (shape.src_len + shape.tgt_len) / (time.perf_counter() - start)
            finally:
                set_kernel(previous)

        return run

    tokens = alternate({"pytorch": rate("pytorch"), "auto": rate("auto")}, rounds)
    print(
        f"Multi30k training step: set_kernel('pytorch') {tokens['pytorch']:.0f}, qkv's kernels {tokens['auto']:.0f} "
        f"tokens/s: {tokens['auto'] / tokens['pytorch']:.3f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-training", action="store_true", help="only the single operations")
    parser.add_argument("--output-loss-only", action="store_true", help="only the output layer with the loss")
    parser.add_argument(
        "--long-only",
        action="store_true",
        help="only attention at the lengths behind short_attention.MAX_KEYS and MAX_CAUSAL_KEYS (96-256 keys)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    if native.module() is None:
        sys.exit("qkv's kernels could not be built here: nothing to compare")
    print(environment())
    if args.output_loss_only:
        return output_loss_times(args.rounds)
    if args.long_only:
        for b, h, d in ((64, 8, 32), (12, 12, 64)):  # d_k 32 (Multi30k, shakespeare_char_best), 64 (GPT-2)
            for t in (96, 128, 192, 256):
                for causal in (False, True):
                    attention_times(t, t, causal, args.rounds, b, h, d)
        return
    for t in (24, 64, 128, 256):
        attention_times(t, t, False, args.rounds)
    for t in (24, 64, 128):
        attention_times(t, t, True, args.rounds)
    for t_q in (1, 2, 4):
        for t in (24, 64):
            attention_times(t_q, t, False, args.rounds)
    dropout_times(args.rounds)
    loss_times(args.rounds)
    output_loss_times(args.rounds)
    if not args.skip_training:
        training(args.rounds)


if __name__ == "__main__":
    main()
