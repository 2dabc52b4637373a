"""Multi-process training on PyTorch's own engine: `torchrun` starts the processes and sets
RANK/WORLD_SIZE/MASTER_ADDR; here they join one process group (gloo on CPU, NCCL on GPU), the model
is wrapped in DistributedDataParallel, and only rank 0 writes files.

    torchrun --nproc_per_node=2 -m qkv train configs/shakespeare_char.toml
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes logs, metrics and checkpoints."""
        return self.rank == 0


def init() -> Ranks:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def total(value: int | float, ranks: Ranks) -> float:
    """Sum of `value` over all ranks (the value itself in a single process)."""
    if ranks.world == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item()


def gather(value, ranks: Ranks) -> list:
    """[value of rank 0, value of rank 1, ...] on every rank (a one-element list in a single process)."""
    if ranks.world == 1:
        return [value]
    out = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out
