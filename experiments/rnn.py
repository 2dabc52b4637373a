"""Experiment 6: self-attention against recurrence (sec 4, Table 1).

Part 1, path length: the input is 64 random symbols and the answer is the symbol `d` positions before
the last one. A recurrent network must carry that symbol through d sequential updates of its state
(path length O(d)); self-attention reaches any position in one step (O(1)). An LSTM, a bidirectional
LSTM (whose backward half reads the sequence from the end, so its distance to the answer is 63 - d)
and a Transformer of about the same size are trained with the same budget for each distance.

Part 2, sequential steps: wall time of one training step against sequence length, LSTM against a
Transformer encoder. The LSTM's T steps run one after another; attention does O(T^2 d) work, in
parallel.

    python experiments/rnn.py           # the full run (times: docs/EXPERIMENTS.md)
    python experiments/rnn.py --fast    # the test suite's version

Prints two tables and writes docs/img/experiment_rnn.png.
"""

from __future__ import annotations

import time

import torch
from common import (
    FIRST,
    TOY_OPTIM,
    Task,
    legend_grid,
    parse_args,
    print_table,
    pyplot,
    save_figure,
    toy_config,
    train_toy,
)
from torch import nn

from qkv.models.seq2seq import EncoderDecoder, count_parameters

LENGTH, SYMBOLS = 64, 16


def recall_task(distance: int) -> Task:
    """Output the symbol `distance` positions before the last one (0 = the last symbol)."""
    at = LENGTH - 1 - distance
    return Task(f"recall_{distance}", lambda x: x[:, at : at + 1], length=LENGTH, symbols=SYMBOLS)


class LSTMClassifier(nn.Module):
    """Embedding, a 2-layer LSTM, and a linear read-out of the final state(s)."""

    def __init__(self, vocab: int, width: int, bidirectional: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.out = nn.Linear(width * (2 if bidirectional else 1), vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) -> logits (B, V) from the last layer's final state of each direction."""
        _, (h, _) = self.lstm(self.embed(x))  # h: (layers * directions, B, width)
        last = h[-2:] if self.lstm.bidirectional else h[-1:]
        return self.out(torch.cat(list(last), -1))


def train_lstm(task: Task, steps: int, bidirectional: bool, width: int, seed: int = 0) -> tuple[int, float]:
    """(parameters, held-out accuracy) of an LSTM trained like the Transformer (Adam, same batches)."""
    torch.manual_seed(seed)
    model = LSTMClassifier(task.vocab, width, bidirectional)
    opt = TOY_OPTIM.build(model)
    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = TOY_OPTIM.lr_at(step, width)
        src, _, tgt = task.batch(64, g)
        loss = nn.functional.cross_entropy(model(src[:, :-1]), tgt[:, 0])  # src without EOS; label only
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # LSTMs need it; harmless here otherwise
        opt.step()
    src, _, tgt = task.batch(500, torch.Generator().manual_seed(10_000 + seed))
    with torch.inference_mode():
        accuracy = (model.eval()(src[:, :-1]).argmax(-1) == tgt[:, 0]).float().mean().item()
    return count_parameters(model), accuracy


def path_length(distances: tuple[int, ...], steps: int) -> list[list]:
    rows = []
    for d in distances:
        task = recall_task(d)
        cfg = toy_config(task)
        transformer = train_toy(task, cfg, steps, TOY_OPTIM)
        n_t = count_parameters(EncoderDecoder(cfg))
        n_l, lstm = train_lstm(task, steps, False, 96)
        n_b, bilstm = train_lstm(task, steps, True, 64)
        rows.append([d, transformer.final_exact, lstm, bilstm, n_t, n_l, n_b])
    return rows


def step_time(lengths: tuple[int, ...], repeats: int = 3) -> list[list]:
    """Seconds per training step (forward + backward, batch 16), LSTM vs Transformer encoder, width 128."""
    rows = []
    lstm = nn.LSTM(128, 128, num_layers=2, batch_first=True)
    for t in lengths:
        task = Task("time", lambda x: x[:, :1], length=t, symbols=SYMBOLS)
        enc = EncoderDecoder(toy_config(task, d_model=128, d_ff=512, n_encoder_layers=2, n_decoder_layers=1))
        x = torch.randint(FIRST, task.vocab, (16, t))
        h = torch.randn(16, t, 128)
        rows.append(
            [
                t,
                _time(lambda: lstm(h)[0].sum().backward(), repeats),
                _time(lambda: enc.encode(x).memory.sum().backward(), repeats),
            ]
        )
    return rows


def _time(f, repeats: int) -> float:
    f()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        f()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    args = parse_args(__doc__, "docs/img/experiment_rnn.png")
    distances, steps = ((1, 40), 400) if args.fast else ((1, 16, 40, 62), 600)
    rows = path_length(distances, steps)
    print_table(
        f"Part 1: recall the symbol d before the last of {LENGTH}, {steps} steps, held-out accuracy",
        ["d", "transformer", "lstm", "bilstm", "params_transformer", "params_lstm", "params_bilstm"],
        rows,
    )
    lengths = (64, 128, 256) if args.fast else (64, 128, 256, 512, 1024)
    times = step_time(lengths)
    print_table(
        "Part 2: seconds per training step (forward + backward), batch 16, width 128, 2 layers",
        ["T", "lstm_s", "transformer_encoder_s"],
        [[t, round(a, 4), round(b, 4)] for t, a, b in times],
    )
    if not args.fast:
        plt = pyplot()
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
        for i, name in ((1, "Transformer"), (2, "LSTM"), (3, "bidirectional LSTM")):
            left.plot([r[0] for r in rows], [r[i] for r in rows], "o-", label=name)
        left.set(title=f"Recall at distance d (sequence of {LENGTH})", xlabel="d", ylabel="held-out accuracy")
        right.plot([r[0] for r in times], [r[1] for r in times], "o-", label="LSTM")
        right.plot([r[0] for r in times], [r[2] for r in times], "o-", label="Transformer encoder")
        right.set(title="Training step time", xlabel="sequence length T", ylabel="seconds", xscale="log", yscale="log")
        legend_grid(left, right)
        save_figure(fig, args.plot)


if __name__ == "__main__":
    main()
