"""`torch.compile` of the batch-1 GPT decoding step before it is recorded as a CUDA graph.

    python benchmarks/levers/graph_compile.py --device cuda [--shape small|gpt2] [--rounds 5]

Why: on an H100 a replayed graph of the small model is about 54 dependent tiny kernels (0.33 ms a
token), and the 124M model's replay takes about 1.2 ms where reading its weights takes about 0.15 ms
(docs/PERFORMANCE.md). Neither reaches 5x the uncached path. Inductor fuses the LayerNorms, residual
adds, GELU and views into fewer kernels, so the recorded graph would hold fewer of them.

Contenders, alternating, greedy, 256 new tokens after a 16-token prompt, random weights: `generate` as
shipped (graphs on CUDA), the same with each window's step compiled before it is recorded, and
generation without the cache. Compiling happens in a warm-up generation before the rounds (one
compile per window length); its time is printed, and the rates are medians of the rounds after it.
On the CPU the compiled fixed-buffer steps run unrecorded, against qkv's recorded steps
(`qkv.decoding.recorded`): a check that the outputs agree, and session 11's CPU figure for the
compiled step. Every contender scores the next token in float32 (`argmax.enabled` off): on the CPU
greedy steps would otherwise take it from 8-bit integers, which the compiled step does not.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate, timed  # noqa: E402

import qkv.decoding.argmax as argmax  # noqa: E402
import qkv.decoding.generate as generation  # noqa: E402
from qkv.decoding.graphed import GraphedSteps  # noqa: E402
from qkv.models.gpt import GPT, GPTConfig  # noqa: E402

SHAPES = {
    "small": GPTConfig(vocab_size=65, block_size=512, d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0),
    "gpt2": GPTConfig(dropout=0.0, attention_dropout=0.0),
}


def compiled_step(model: GPT, token: torch.Tensor, cache) -> torch.Tensor:
    return model(token, cache).logits[:, -1]  # (1, V), as GraphedSteps.step gives


# One compiled function for every generation: dynamo keeps a compiled graph per window length
# (the window is a Python int it specialises on), so later generations reuse them.
COMPILED = torch.compile(compiled_step, dynamic=False)


class CompiledGraphedSteps(GraphedSteps):
    """GraphedSteps whose step, what each graph records, is the compiled forward. On the CPU it runs
    unrecorded: qkv's recording sees PyTorch's operators, not the kernels inductor writes."""

    def __init__(self, model: GPT, capture: bool, integer=None) -> None:
        assert integer is None, "float32 scores only (argmax.enabled is off)"
        super().__init__(model, capture and next(model.parameters()).is_cuda)

    def step(self) -> torch.Tensor:
        return COMPILED(self.model, self.token, self.cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    argmax.enabled = False  # float32 next-token scores for every contender (module docstring)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)  # a graph per window
    torch.manual_seed(0)
    model = GPT(SHAPES[args.shape]).eval().to(args.device)
    prompt = torch.randint(0, model.config.vocab_size, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    graph = args.device == "cuda"

    def run(kind: str) -> list[int]:
        generation.GraphedSteps = CompiledGraphedSteps if kind == "compiled" else GraphedSteps
        try:
            return list(
                generation.generate(
                    model, prompt, args.tokens, temperature=0.0, use_cache=kind != "uncached", record_steps=True
                )
            )
        finally:
            generation.GraphedSteps = GraphedSteps

    start = time.perf_counter()
    outputs = {"compiled": run("compiled")}  # the warm-up: compiles every window this length reaches
    print(f"compiling (and a first generation): {time.perf_counter() - start:.1f} s")
    outputs.update({kind: run(kind) for kind in ("graphs", "uncached")})
    print("greedy outputs identical:", outputs["compiled"] == outputs["graphs"] == outputs["uncached"])
    med = alternate({kind: lambda kind=kind: args.tokens / timed(lambda: run(kind)) for kind in outputs}, args.rounds)
    label = "graphs" if graph else "recorded steps"
    print(
        f"{args.shape} on {args.device}, tokens/s (medians of {args.rounds}): {label} {med['graphs']:.0f},"
        f" compiled {label} {med['compiled']:.0f} ({med['compiled'] / med['graphs']:.2f}x),"
        f" uncached {med['uncached']:.0f}; compiled against uncached {med['compiled'] / med['uncached']:.2f}x"
    )


if __name__ == "__main__":
    main()
