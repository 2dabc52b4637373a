"""Training products on oneDNN once their shape recurs (`qkv.nn.linear.recurring`), against MKL alone.

    python benchmarks/levers/recurring_shapes.py [--rounds 7] [--real 30]

On processors whose MKL runs generic code and whose AVX-512 is half-width (AMD Zen 4), `qkv.nn.linear`
sends a training product to oneDNN (its forward and dL/dx, and dL/dW for weights of 2^18 numbers and
more: `weight_gradient_on_mkl`) once its shape has come before. This times, alternating in one process,
the rule as built ("recurring") against the rule switched off ("mkl", every training product on MKL,
as before session 31) on:
1. the Multi30k training step of `benchmarks/seq2seq_train.py` (one fixed batch shape);
2. the 4 x 128 GPT training step of `benchmarks/gpt.py`;
3. with --real N, N real token-batched Multi30k batches (`qkv.data.batching.token_batches`, 2,500
   tokens a side, each batch a new shape): the first pass of each setting shows the cost of shapes met
   for the first time, later passes the steady state. Needs ../shared/data/multi30k and a trained
   model's tokenizer (runs/multi30k_de_en/best).
Prints tokens/s per setting (medians) and the ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from gpt import pair  # noqa: E402
from seq2seq_train import SHAPES, contender, qkv_model, qkv_step  # noqa: E402

import qkv.nn.linear as qlinear  # noqa: E402

RULE = qlinear.recurring


def use(setting: str) -> None:
    qlinear.recurring = RULE if setting == "recurring" else (lambda x, weight: False)


def compare(name: str, run, rounds: int) -> None:
    names = ["mkl", "recurring"]
    for setting in names:  # warm-up: allocator, optimiser state, the shapes noted
        use(setting)
        run()
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for setting in names if r % 2 == 0 else names[::-1]:
            use(setting)
            rates[setting].append(run())
    use("recurring")
    mkl, ours = statistics.median(rates["mkl"]), statistics.median(rates["recurring"])
    print(f"{name}: mkl {mkl:,.0f} tokens/s, recurring {ours:,.0f} tokens/s, {ours / mkl:.3f}x", flush=True)


def seq2seq_step(rounds: int) -> None:
    x, b = SHAPES["multi30k"], 64
    g = torch.Generator().manual_seed(0)
    batches = [
        tuple(torch.randint(3, x.vocab, (b, n), generator=g) for n in (x.src_len, x.tgt_len, x.tgt_len))
        for _ in range(5)
    ]
    torch.manual_seed(0)
    model = qkv_model(x)
    states_of, criterion = qkv_step(model)
    compare("Multi30k training step", contender(model, states_of, 5, batches, torch.float32, criterion), rounds)


def gpt_step(rounds: int) -> None:
    _, ours = pair(4, 4, 128, 65, 64)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 65, (12, 65), generator=g) for _ in range(10)]
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
    ours.train()

    def run() -> float:
        start = time.perf_counter()
        for b in batches:
            logits = ours(b[:, :-1]).logits
            F.cross_entropy(logits.reshape(-1, 65), b[:, 1:].reshape(-1)).backward()
            torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return len(batches) * 12 * 64 / (time.perf_counter() - start)

    compare("4 x 128 GPT training step", run, rounds)


def real_batches(n: int) -> None:
    from qkv.data.batching import token_batches
    from qkv.data.padding import pad_sequences
    from qkv.data.parallel import read_lines
    from qkv.data.subword import PairTokenizer
    from qkv.models.seq2seq import EncoderDecoder, small_config
    from qkv.tasks.translation import translation_loss

    tok = PairTokenizer.load("runs/multi30k_de_en/best")
    src = tok.encode_src(read_lines("../shared/data/multi30k/train.de"))
    tgt = tok.encode_tgt(read_lines("../shared/data/multi30k/train.en"))
    eos, bos, pad = 2, 1, 0
    groups = random.Random(0).sample(token_batches([len(s) + 1 for s in src], [len(t) + 1 for t in tgt], 2500), n)
    data = []
    for b in groups:
        s = pad_sequences([src[i] + [eos] for i in b], pad)
        t = pad_sequences([[bos] + tgt[i] + [eos] for i in b], pad)
        data.append((s, t[:, :-1], t[:, 1:]))
    torch.manual_seed(0)
    model = EncoderDecoder(small_config(8000)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)

    def run() -> float:
        start, tokens = time.perf_counter(), 0
        for s, t_in, t_out in data:
            loss, count = translation_loss(model, s, t_in, t_out, 0.1)
            (loss / count).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += s.numel() + t_in.numel()
        return tokens / (time.perf_counter() - start)

    print(f"{n} real batches, {len({(s.shape, t.shape) for s, t, _ in data})} shapes; passes in order:")
    for setting in ["mkl", "recurring"] * 3:  # the first "recurring" pass notes the shapes, the second builds
        use(setting)
        print(f"  {setting} {run():,.0f} tokens/s", flush=True)
    use("recurring")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--real", type=int, default=0, help="also N real token-batched Multi30k batches")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not (qlinear.mkl_runs_generic_code() and not qlinear.full_width_avx512()):
        print("note: the rule applies where MKL runs generic code on half-width AVX-512, not on this processor")
    seq2seq_step(args.rounds)
    gpt_step(args.rounds)
    if args.real:
        real_batches(args.real)


if __name__ == "__main__":
    main()
