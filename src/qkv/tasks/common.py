"""What several tasks share."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def info(message: str) -> None:
    """A line about the data on standard error (standard output holds only the run's JSON result)."""
    print(message, file=sys.stderr, flush=True)


@contextmanager
def timed(what: str) -> Iterator[None]:
    """`what...` on standard error before a step that can take minutes on a large corpus (training a
    tokenizer), and the seconds it took after, on the same line."""
    start = time.perf_counter()
    print(f"{what}...", end="", file=sys.stderr, flush=True)
    try:
        yield
    finally:  # an error message that follows starts a line of its own
        print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def to_model(batch, model: nn.Module):
    """A batch (a tensor, or a tuple/list of them) on the device of `model`'s parameters."""
    device = next(model.parameters()).device
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return type(batch)(to_model(b, model) for b in batch)


class GeneratorPosition:
    """For tasks that draw every training batch from `self.generator`: its state is their whole data
    position (saved in resumable checkpoints), and each rank of a multi-process run reseeds it."""

    generator: torch.Generator

    def shard(self, rank: int, world: int) -> None:
        """Each rank draws its own batches (rank 0 keeps the single-process stream)."""
        self.generator = torch.Generator().manual_seed(self.loop.seed + rank)

    def state_dict(self):
        return {"generator": self.generator.get_state()}, {}

    def load_state_dict(self, tensors, extra) -> None:
        self.generator.set_state(tensors["generator"])
