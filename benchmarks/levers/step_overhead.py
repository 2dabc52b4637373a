"""Where the small GPT's batch-1 decoding step spends its time on the CPU, and what capturing the step
would give (session 11).

    python benchmarks/levers/step_overhead.py [--rounds 7] [--compile]

The 4 x 128 GPT of the generation benchmark (random weights, context 512), 256 new tokens after a
16-token prompt, greedy, the machine's threads.

1. `generate` with the plain cache against `flat`: the same operators on the same weights called as
   plain functions, with the parameters fetched once up front, so no `nn.Module` call and no module
   attribute lookup per token (same cache writes, same SDPA). The outputs must be identical. The gap
   is the cost of PyTorch's module machinery at this size, not arithmetic. `flat_lookups` is `flat`
   plus, every token, fetching the parameters through the modules again (130 lookups, each through
   `Module.__getattr__`): what those lookups alone cost. `recorded` is `generate`'s default since
   session 37: the steps replayed from qkv's recording (`qkv.decoding.recorded`).
2. One fixed-buffer step (the `StaticKVCache` step that `qkv.decoding.graphed` records as a CUDA
   graph, here with a 64-slot window) run eagerly, as a TorchScript trace (deprecated since PyTorch
   2.5), replayed from qkv's recording, and with --compile through `torch.compile` (inductor, C++
   wrapper; cold compile into a fresh cache directory). Prints us per step and the one-off cost of
   each capture. This part runs under `set_kernel("pytorch")`, so that the trace sees every operator
   (session 33).

The flat step exists only to measure; the library keeps one block implementation (STYLE principle 1).
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate, timed  # noqa: E402

from qkv.decoding.generate import generate  # noqa: E402
from qkv.decoding.graphed import GraphedSteps  # noqa: E402
from qkv.decoding.recorded import record  # noqa: E402
from qkv.models.gpt import GPT, GPTConfig  # noqa: E402
from qkv.nn.linear import set_kernel  # noqa: E402


def parameters_of(model: GPT) -> list[tuple]:
    """Each block's parameters, fetched through the modules: 32 attribute lookups a layer, 130 for four."""
    return [
        (
            b.norm_self.weight, b.norm_self.bias, b.self_attn.qkv.weight, b.self_attn.qkv.bias,
            b.self_attn.out.weight, b.self_attn.out.bias, b.norm_ff.weight, b.norm_ff.bias,
            b.ff.up.weight, b.ff.up.bias, b.ff.down.weight, b.ff.down.bias,
        )
        for b in model.blocks.layers
    ]  # fmt: skip


def flat_generate(model: GPT, prompt: list[int], n: int, lookups: bool = False) -> list[int]:
    """Greedy generation with the model's own prompt forward, then steps as plain function calls.
    lookups: fetch the parameters through the modules again at every token (and throw them away)."""
    c = model.config
    h, d = c.n_heads, c.d_model // c.n_heads
    layers = parameters_of(model)
    tokens, positions = model.embed.tokens.weight, model.embed.positions.weight
    final = (model.blocks.final_norm.weight, model.blocks.final_norm.bias)
    with torch.inference_mode():
        cache = model.new_cache()
        nxt = int(model(torch.tensor([prompt]), cache).logits[0, -1].argmax())
        ks, vs = [], []
        for layer in cache.layers:  # the prompt's keys/values in buffers over the whole context
            for src, dst in ((layer.k, ks), (layer.v, vs)):
                buf = src.new_empty(1, h, c.block_size, d)
                buf[:, :, : len(prompt)] = src[:, :, : len(prompt)]
                dst.append(buf)
        out, t = [nxt], len(prompt)
        for _ in range(n - 1):
            if lookups:
                parameters_of(model)
            x = (tokens[nxt] + positions[t]).view(1, 1, c.d_model)
            for i, (n1w, n1b, wqkv, bqkv, wo, bo, n2w, n2b, wu, bu, wd, bd) in enumerate(layers):
                a = F.layer_norm(x, (c.d_model,), n1w, n1b, c.norm_eps)
                q, k, v = F.linear(a, wqkv, bqkv).view(1, 1, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
                ks[i].narrow(2, t, 1).copy_(k)
                vs[i].narrow(2, t, 1).copy_(v)
                y = F.scaled_dot_product_attention(q, ks[i].narrow(2, 0, t + 1), vs[i].narrow(2, 0, t + 1))
                x = x + F.linear(y.transpose(1, 2).reshape(1, 1, c.d_model), wo, bo)
                a = F.layer_norm(x, (c.d_model,), n2w, n2b, c.norm_eps)
                x = x + F.linear(F.gelu(F.linear(a, wu, bu), approximate="tanh"), wd, bd)
            x = F.layer_norm(x, (c.d_model,), *final, c.norm_eps)
            nxt = int(F.linear(x, tokens).argmax())
            out.append(nxt)
            t += 1
        return out


class Step(torch.nn.Module):
    """The fixed-buffer step as a module (a trace keeps a module's parameters as parameters)."""

    def __init__(self, model: GPT, steps: GraphedSteps, window: int) -> None:
        super().__init__()
        self.model, self.steps, self.window = model, steps, window

    def forward(self, token, position):
        return self.model(token, self.steps.cache.at(position, self.window)).logits


def step_us(fn, n: int = 300) -> float:
    """Microseconds a call, over n calls."""
    return timed(lambda: [fn() for _ in range(n)]) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also torch.compile the step (15-20 s to compile)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=512, d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.0))
    model.eval()
    prompt = list(range(16))
    runs = {
        "generate": lambda: list(generate(model, prompt, 256, temperature=0.0, record_steps=False)),
        "recorded": lambda: list(generate(model, prompt, 256, temperature=0.0)),  # generate's default
        "flat": lambda: flat_generate(model, prompt, 256),
        "flat_lookups": lambda: flat_generate(model, prompt, 256, lookups=True),
    }
    assert runs["generate"]() == runs["flat"]() == runs["recorded"](), "every way must give the same tokens"
    med = alternate({k: lambda fn=fn: 256 / timed(fn) for k, fn in runs.items()}, args.rounds)
    print(
        f"tokens/s, medians of {args.rounds} alternating rounds, {torch.get_num_threads()} threads: generate "
        f"(plain cache) {med['generate']:.0f}, recorded steps {med['recorded']:.0f}"
        f" ({med['recorded'] / med['generate']:.2f}x), flat {med['flat']:.0f} ({med['flat'] / med['generate']:.2f}x),"
        f" flat with the parameters looked up through the modules every token {med['flat_lookups']:.0f}"
        f" ({1e6 / med['flat_lookups'] - 1e6 / med['flat']:.0f} us a token more)"
    )

    # Part 2 on PyTorch's operators only: a trace records PyTorch's operators, and qkv's compiled kernels
    # (matvec, attention, GELU: pybind functions since session 25) would be baked into it as constants
    # (its logits then differed from the eager step's).
    previous = set_kernel("pytorch")
    steps = GraphedSteps(model, capture=False)
    with torch.inference_mode():
        steps(prompt, 0)  # the prompt into the fixed buffers
        steps.token.fill_(3)
        steps.position.fill_(len(prompt))

        step = Step(model, steps, 64)

        def eager():
            return step(steps.token, steps.position)

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation warning, and its tracer's notes
            traced = torch.jit.trace(step, (steps.token, steps.position), check_trace=False)
        trace_ms = (time.perf_counter() - start) * 1e3
        first_ms = []  # the TorchScript executor profiles and optimises on its first calls
        for _ in range(3):
            start = time.perf_counter()
            logits = traced(steps.token, steps.position)
            first_ms.append((time.perf_counter() - start) * 1e3)
        torch.testing.assert_close(logits, eager(), rtol=0, atol=0)
        start = time.perf_counter()
        recorded, _ = record(eager)  # qkv's recording (qkv.decoding.recorded), as `generate` makes on the CPU
        record_ms = (time.perf_counter() - start) * 1e3
        contenders = {"eager": eager, "traced": lambda: traced(steps.token, steps.position), "recorded": recorded}
        if args.compile:
            import torch._inductor.config as inductor

            os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp()  # a cold compile, as a user's first
            inductor.cpp_wrapper = True
            compiled = torch.compile(eager, dynamic=False)
            start = time.perf_counter()
            torch.testing.assert_close(compiled(), eager())
            print(f"torch.compile: {time.perf_counter() - start:.1f} s to compile one window")
            contenders["compiled"] = compiled
        us = alternate({k: lambda fn=fn: step_us(fn) for k, fn in contenders.items()}, args.rounds)
    set_kernel(previous)
    calls = " / ".join(f"{t:.1f}" for t in first_ms)
    print(f"TorchScript trace: {trace_ms:.0f} ms to trace, {calls} ms its first three calls (per window)")
    print(f"qkv's recording: {record_ms:.1f} ms to record and check (per window)")
    print("one fixed-buffer step (64-slot window), us, medians: " + ", ".join(f"{k} {v:.0f}" for k, v in us.items()))


if __name__ == "__main__":
    main()
