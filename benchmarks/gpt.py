"""GPT speed against Hugging Face `GPT2LMHeadModel`, same weights, same process.

    python benchmarks/gpt.py            # training tokens/s (nanoGPT CPU shape) and generation tokens/s

1. Training: one step = forward, cross-entropy, backward, AdamW step (PyTorch's fused kernel on both
   sides, what qkv's trainer and `transformers`' Trainer use by default); batch 12 x 64 characters,
   4 layers, 4 heads, width 128 (the issue's nanoGPT CPU settings).
2. Generation: batch 1, 256 new tokens after a 16-token prompt, greedy on both sides (same settings),
   from a random `gpt2`-shaped (124M) model and from the small one; plus qkv without its KV cache.
   qkv's cached steps replay a recording of the step (its default: a CUDA graph on a GPU, qkv's own
   recording of the operators on the CPU), and the same steps without it run as a fourth contender
   (`qkv_unrecorded`) to show what the recording gives. Where qkv's greedy generation drafts tokens with
   8-bit weights and checks them in float32 (the 124M model on a CPU with VNNI, `qkv.decoding.
   speculative`), it also runs without that (`qkv_plain`), and the line gives the tokens a check kept
   on average and how many distinct tokens the output has: a random model with GPT-2's tied embeddings
   mostly repeats tokens, which the draft then always guesses; a trained model's text is harder
   (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, device_argument, report, timed  # noqa: E402

import qkv.decoding.speculative as speculative  # noqa: E402
from qkv.convert.gpt2 import from_hf  # noqa: E402
from qkv.decoding.generate import generate  # noqa: E402


def pair(n_layer: int, n_head: int, n_embd: int, vocab: int, n_positions: int, device: str = "cpu"):
    """A random HF GPT-2 and the same weights as a qkv GPT (through the production converter)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        vocab_size=vocab,
        n_positions=n_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(cfg)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = from_hf(d, Path(d) / "qkv")
    return hf.to(device), ours.to(device)


def bench_training(steps: int, rounds: int, device: str) -> dict:
    hf, ours = pair(4, 4, 128, 65, 64, device)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 65, (12, 65), generator=g).to(device) for _ in range(steps)]

    def contender(model, logits_of):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
        model.train()

        def run() -> float:
            def loop():
                for b in batches:
                    logits = logits_of(b[:, :-1])
                    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), b[:, 1:].reshape(-1))
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)

            return steps * 12 * 64 / timed(loop)

        return run

    rates = alternate(
        {"qkv": contender(ours, lambda x: ours(x).logits), "hf_gpt2": contender(hf, lambda x: hf(x).logits)}, rounds
    )
    return report(
        "gpt_train_tokens_per_s",
        "tokens/s",
        rates,
        "hf_gpt2",
        dtype="float32",
        shape="4 layers, 4 heads, d 128, batch 12 x 64, vocab 65",
    )


def bench_generation(name: str, shape: tuple, new_tokens: int, rounds: int, uncached: bool, device: str) -> dict:
    hf, ours = pair(*shape, device)
    hf.eval()
    hf.generation_config.eos_token_id = None
    prompt = torch.randint(0, shape[3], (1, 16), generator=torch.Generator().manual_seed(1)).to(device)

    def run_qkv() -> float:
        return new_tokens / timed(lambda: list(generate(ours, prompt[0].tolist(), new_tokens, temperature=0.0)))

    def run_hf() -> float:
        with torch.inference_mode():
            t = timed(
                lambda: hf.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    pad_token_id=0,
                )
            )
        return new_tokens / t

    contenders = {"qkv": run_qkv, "hf_generate": run_hf}
    if uncached:
        contenders["qkv_no_cache"] = lambda: (
            new_tokens
            / timed(lambda: list(generate(ours, prompt[0].tolist(), new_tokens, temperature=0.0, use_cache=False)))
        )
    with torch.inference_mode():
        ours_out = list(generate(ours, prompt[0].tolist(), 32, temperature=0.0))
        hf_out = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=32,
            min_new_tokens=32,
            do_sample=False,
            pad_token_id=0,
        )[0, 16:].tolist()
    # the lever: qkv's cached steps replay a recording (a CUDA graph on a GPU, qkv's own on the CPU);
    # the same steps without it, for comparison
    contenders["qkv_unrecorded"] = lambda: (
        new_tokens
        / timed(lambda: list(generate(ours, prompt[0].tolist(), new_tokens, temperature=0.0, record_steps=False)))
    )
    checks = drafted_checks(ours, prompt[0].tolist(), new_tokens)
    if checks:
        contenders["qkv_plain"] = lambda: (
            new_tokens
            / timed(lambda: list(generate(ours, prompt[0].tolist(), new_tokens, temperature=0.0, speculate=False)))
        )
    rates = alternate(contenders, rounds)
    extra = {"ratio_vs_qkv_no_cache": round(rates["qkv"] / rates["qkv_no_cache"], 3)} if uncached else {}
    extra["ratio_vs_qkv_unrecorded"] = round(rates["qkv"] / rates["qkv_unrecorded"], 3)
    if checks:
        extra["ratio_vs_qkv_plain"] = round(rates["qkv"] / rates["qkv_plain"], 3)
        extra["tokens_per_check"] = round(new_tokens / checks, 2)
        extra["distinct_tokens"] = len(set(generate(ours, prompt[0].tolist(), new_tokens, temperature=0.0)))
    return report(
        f"gpt_generate_tokens_per_s[{name}]",
        "tokens/s",
        rates,
        "hf_generate",
        dtype="float32",
        batch=1,
        new_tokens=new_tokens,
        greedy_outputs_identical=ours_out == hf_out,
        **extra,
    )


def drafted_checks(model, prompt: list[int], new_tokens: int) -> int:
    """How many float32 checks qkv's greedy generation of new_tokens ran (0: it drafted nothing)."""
    real, count = speculative._checked, [0]

    def counted(*args):
        count[0] += 1
        return real(*args)

    speculative._checked = counted
    try:
        list(generate(model, prompt, new_tokens, temperature=0.0))
    finally:
        speculative._checked = real
    return count[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument(
        "--only", choices=["training", "small", "gpt2"], help="run one part: training, or generation of one model"
    )
    device_argument(parser)
    args = parser.parse_args()
    r = 1 if args.quick else 5
    if args.only in (None, "training"):
        bench_training(steps=10 if args.quick else 50, rounds=r, device=args.device)
    if args.only in (None, "small"):
        # the small model's round takes about a second: 3x the rounds for a steadier median, at little cost
        bench_generation("small", (4, 4, 128, 65, 512), 256, 3 * r, uncached=True, device=args.device)
    if args.only in (None, "gpt2"):
        bench_generation(
            "gpt2-124M",
            (12, 12, 768, 50257, 1024),
            64 if args.quick else 256,
            1 if args.quick else 3,
            uncached=True,
            device=args.device,
        )


if __name__ == "__main__":
    main()
