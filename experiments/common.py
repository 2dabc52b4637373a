"""What the experiments share: toy sequence tasks, a small training loop, tables and plots.

The tasks are synthetic so that each experiment isolates one claim and runs in minutes on a CPU;
every model is a qkv `EncoderDecoder` built from the library's shared blocks, with one setting changed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from qkv.data.padding import pad_sequences
from qkv.decoding.greedy import greedy_decode
from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig
from qkv.train.losses import label_smoothed_cross_entropy
from qkv.train.optim import OptimConfig

PAD, BOS, EOS, FIRST = 0, 1, 2, 4  # ids 0-3 are reserved as in qkv's vocabularies; symbols start at 4


@dataclass(frozen=True)
class Task:
    """A sequence-to-sequence toy task: `length` random symbols in, `target(x)` out (B, L) -> (B, L')."""

    name: str
    target: Callable[[Tensor], Tensor]
    length: int = 8
    symbols: int = 16
    min_length: int = 0  # > 0: each sequence's length is drawn from min_length..length, padded on the right
    out_symbols: int = 0  # the target alphabet, when it differs from the source's

    @property
    def tgt_vocab(self) -> int:
        return FIRST + (self.out_symbols or self.symbols)

    @property
    def vocab(self) -> int:
        return FIRST + self.symbols

    def batch(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(src with EOS, decoder input starting with BOS, decoder target ending with EOS)."""
        x = torch.randint(FIRST, self.vocab, (n, self.length), generator=g)
        if self.min_length:
            return self._variable(x, torch.randint(self.min_length, self.length + 1, (n,), generator=g))
        y = self.target(x)
        eos, bos = torch.full((n, 1), EOS), torch.full((n, 1), BOS)
        return torch.cat([x, eos], 1), torch.cat([bos, y], 1), torch.cat([y, eos], 1)

    def _variable(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rows = [x[i, :n] for i, n in enumerate(lengths.tolist())]
        ys = [self.target(r[None])[0] for r in rows]
        pad = lambda seqs: pad_sequences([s.tolist() for s in seqs], PAD)  # noqa: E731
        eos, bos = torch.tensor([EOS]), torch.tensor([BOS])
        return (
            pad([torch.cat([r, eos]) for r in rows]),
            pad([torch.cat([bos, y]) for y in ys]),
            pad([torch.cat([y, eos]) for y in ys]),
        )


REVERSE = Task("reverse", lambda x: x.flip(1))


def pair_task(length: int = 8, symbols: int = 8) -> Task:
    """y_i = the ordered pair (x_i, x_{L-1-i}) as one symbol of a symbols^2 alphabet: each output needs two
    source positions at once, and which is which."""
    return Task(
        "pairs",
        lambda x: (x - FIRST) * symbols + (x - FIRST).flip(1) + FIRST,
        length=length,
        symbols=symbols,
        out_symbols=symbols * symbols,
    )


def toy_config(task: Task, **changes) -> Seq2SeqConfig:
    """A small encoder-decoder for the toy tasks (2 + 2 layers, d_model 64, 4 heads, no dropout)."""
    base = Seq2SeqConfig(
        task.vocab,
        task.tgt_vocab,
        d_model=64,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=128,
        dropout=0.0,
        max_len=4 * task.length + 8,
        share_embeddings=task.tgt_vocab == task.vocab,
    )
    return replace(base, **changes)


TOY_OPTIM = OptimConfig(schedule="inverse_sqrt", lr=2e-3, warmup_steps=100, label_smoothing=0.0)


@dataclass
class Curve:
    """What one run recorded: (step, value) lists, and the final figures."""

    loss: list[tuple[int, float]]  # teacher-forced training loss (nats/token)
    exact: list[tuple[int, float]]  # held-out exact match of greedy decoding
    token_accuracy: float = 0.0  # teacher-forced held-out token accuracy at the end
    seconds: float = 0.0
    diverged: bool = False

    @property
    def final_exact(self) -> float:
        return self.exact[-1][1] if self.exact else 0.0

    @property
    def final_loss(self) -> float:
        tail = [v for _, v in self.loss[-5:]]
        return sum(tail) / max(1, len(tail))


def train_toy(
    task: Task,
    cfg: Seq2SeqConfig,
    steps: int,
    optim: OptimConfig,
    seed: int = 0,
    batch_size: int = 64,
    evals: int = 10,
    on_step: Callable[[EncoderDecoder, int], None] | None = None,
) -> Curve:
    """Train `cfg` on `task`; log the loss every step and greedy exact match `evals` times."""
    torch.manual_seed(seed)
    model = EncoderDecoder(cfg)
    opt = optim.build(model)
    g = torch.Generator().manual_seed(seed)
    test = task.batch(500, torch.Generator().manual_seed(10_000 + seed))
    curve, start = Curve([], []), time.perf_counter()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = optim.lr_at(step, cfg.d_model)
        src, tgt_in, tgt_out = task.batch(batch_size, g)
        model.train()
        loss, n = label_smoothed_cross_entropy(model(src, tgt_in), tgt_out, 0.0, cfg.pad_id)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        if on_step is not None:
            on_step(model, step)
        if optim.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm)
        opt.step()
        value = loss.item() / n
        curve.loss.append((step, value))
        if not math.isfinite(value):
            curve.diverged = True
            break
        if step % max(1, steps // evals) == 0 or step == steps:
            curve.exact.append((step, exact_match(model, test)))
    curve.token_accuracy = teacher_forced_accuracy(model, test)
    curve.seconds = time.perf_counter() - start
    return curve


def ablate(field: str, values: tuple[str, ...], steps: int, task: Task = REVERSE) -> dict[str, Curve]:
    """One toy model per value of a Seq2SeqConfig field, everything else (data, seed, optimiser) equal."""
    return {v: train_toy(task, toy_config(task, **{field: v}), steps, TOY_OPTIM) for v in values}


def report_generation(title: str, field: str, curves: dict[str, Curve]) -> None:
    """The table of an ablation: training loss, teacher-forced accuracy, and generation's exact match."""
    print_table(
        title,
        [field, "final_train_loss", "teacher_forced_token_acc", "greedy_exact_match"],
        [[v, round(c.final_loss, 4), c.token_accuracy, c.final_exact] for v, c in curves.items()],
    )


@torch.inference_mode()
def exact_match(model: EncoderDecoder, test: tuple[Tensor, Tensor, Tensor]) -> float:
    """Fraction of held-out sequences whose greedy decoding is entirely right."""
    model.eval()
    src, _, tgt_out = test
    out = greedy_decode(model, src, tgt_out.size(1))
    out = torch.nn.functional.pad(out, (0, tgt_out.size(1) - out.size(1)), value=PAD)
    return (out == tgt_out).all(1).float().mean().item()


@torch.inference_mode()
def teacher_forced_accuracy(model: EncoderDecoder, test: tuple[Tensor, Tensor, Tensor]) -> float:
    """Fraction of target tokens (padding excluded) predicted right when the true prefix is given."""
    model.eval()
    src, tgt_in, tgt_out = test
    real = tgt_out != PAD
    return (model(src, tgt_in).argmax(-1) == tgt_out)[real].float().mean().item()


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A plain-text table, then the rows as one JSON line (for scripts and the docs)."""
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(header)]
    print(title)
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(_fmt(v).rjust(w) for v, w in zip(r, widths)))
    print(json.dumps([dict(zip(header, r)) for r in rows]))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def parse_args(doc: str, plot: str) -> argparse.Namespace:
    """--fast (the test suite's short version) and --plot PATH, with the module docstring as --help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="fewer steps: the direction of the result only")
    parser.add_argument("--plot", default=plot, help=f"PNG to write (default {plot})")
    return parser.parse_args()


def plot_training(curves: dict[str, Curve], path: str, left: str, right: str) -> None:
    """Each run's training loss (left panel) and held-out greedy exact match (right panel)."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, c in curves.items():
        a.plot(*zip(*c.loss), label=name, alpha=0.8)
        b.plot(*zip(*c.exact), "o-", label=name)
    a.set(yscale="log", xlabel="step", ylabel="teacher-forced training loss", title=left)
    b.set(xlabel="step", ylabel="greedy exact match (held out)", title=right)
    legend_grid(a, b)
    save_figure(fig, path)


def legend_grid(*axes) -> None:
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)


def save_figure(fig, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def pyplot():
    """matplotlib's pyplot on the file-only backend (experiments run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
