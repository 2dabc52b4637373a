"""Upper bounds on what faster non-product passes could give the Multi30k training step (session 38):
the step with one kind of qkv kernel made free, each kind against the step as it is, alternating in
one process.

    python benchmarks/levers/step_bounds.py [--rounds 15]

"Made free" means the kernel is replaced by a stub that returns cached tensors of the right shapes
(its numbers are wrong, so the step trains nothing; only the time counts), seen through
`native.observed`, the hook that `qkv.decoding.recorded` uses. The kinds: LayerNorm(x + Dropout(y))
forward and backward (`dropout_norm`), attention forward and backward, the label-smoothed loss's pass
over each block of scores (the output layer's products stay), Adam's step (skipped), and the linear
layers' biases (`F.linear` called without them: `addmm`'s copies and the bias sums go). Prints each
variant's median step and what it saves against the real step.
"""

import argparse
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1]))
from common import alternate  # noqa: E402
from seq2seq_train import SHAPES, qkv_model, qkv_step  # noqa: E402

import qkv.nn.linear as qlinear  # noqa: E402
from qkv.nn import native  # noqa: E402

_cached: dict[tuple, torch.Tensor] = {}


def cached(shape) -> torch.Tensor:
    """A tensor of this shape made once: small values, so that nothing downstream overflows."""
    shape = tuple(shape)
    if shape not in _cached:
        _cached[shape] = torch.randn(shape) * 0.01
    return _cached[shape]


def attention_backward(grad, q, k, v, out, lse, mask, causal, scale, dq, dk, dv):
    return [t if t is not None else cached(s.shape) for t, s in ((dq, q), (dk, k), (dv, v))]


STUBS = {
    "dropout_norm": {
        "dropout_layer_norm_forward": lambda y, *a: [
            cached(y.shape),
            cached(y.shape),
            cached(y.shape[:1]),
            cached(y.shape[:1]) + 1,
        ],
        "dropout_layer_norm_backward": lambda g, s, *a: [  # a[-1]: whether y's bias wants its gradient too
            cached(s.shape),
            cached(s.shape),
            *[cached(s.shape[1:])] * (3 if a[-1] else 2),
        ],
    },
    "attention": {
        "attention_forward": lambda q, *a: [cached(q.shape), cached(q.shape[:-1])],
        "attention_backward": attention_backward,
    },
    "loss pass": {"smoothed_loss_with_gradient": lambda z, *a: 0.0},  # leaves the scores as "gradient"
}
NO_BIAS = types.SimpleNamespace(linear=lambda x, w, b=None: F.linear(x, w, None), relu=F.relu)


def contender(kind: str, batches) -> callable:
    torch.manual_seed(0)
    model = qkv_model(SHAPES["multi30k"]).train()
    states_of, criterion = qkv_step(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
    stubs = STUBS.get(kind, {})

    def observer(name, kernel):
        return stubs.get(name, kernel)

    def run() -> float:
        qlinear.F = NO_BIAS if kind == "biases" else F
        try:
            start = time.perf_counter()
            with native.observed(observer):
                for src, tgt_in, tgt_out in batches:
                    criterion(states_of(src, tgt_in), tgt_out).backward()
                    if kind != "adam":
                        opt.step()
                    opt.zero_grad(set_to_none=True)
            return (time.perf_counter() - start) / len(batches) * 1e3
        finally:
            qlinear.F = F

    run()  # warm-up
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    x, g = SHAPES["multi30k"], torch.Generator().manual_seed(0)
    batches = [
        tuple(torch.randint(3, x.vocab, (64, n), generator=g) for n in (x.src_len, x.tgt_len, x.tgt_len))
        for _ in range(5)
    ]
    runs = {kind: contender(kind, batches) for kind in ("real", *STUBS, "adam", "biases")}
    steps = alternate(runs, args.rounds)  # each kind's median step, ms
    real = steps["real"]
    print(f"the step, median of {args.rounds} rounds of 5: {real:.1f} ms")
    for kind, step in steps.items():
        if kind != "real":
            print(f"  {kind} made free: {step:.1f} ms, saves {real - step:.1f} ms ({(real / step - 1) * 100:.1f}%)")


if __name__ == "__main__":
    main()
