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

from qkv.config import ConfigError


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


def finish(ranks: Ranks, together: bool) -> None:
    """Leave the process group before the interpreter shuts down. Without this, gloo's worker threads can
    still hold work (and tensors) when Python finalises, and a rank dies with SIGABRT after training has
    finished (seen once in CI; pytorch/pytorch#179291 describes the race). `together`: every rank ended
    normally, so they first meet at a barrier and none closes its connections while rank 0 is still
    writing its last checkpoint (after an error the others may never arrive: no barrier then)."""
    if ranks.world > 1 and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def device(choice: str, setting: str = "train.device") -> torch.device:
    """The device this process runs on: "auto" is CUDA when there is one (under torchrun, the GPU of
    LOCAL_RANK), else the CPU. `setting` names where the choice came from, for the error."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting} = cuda, but torch sees no CUDA device")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def share(n: int, ranks: Ranks) -> range:
    """The indices (of n validation batches or sentences) this rank evaluates: every world-th one."""
    return range(ranks.rank, n, ranks.world)


def sums(values: dict[str, float], ranks: Ranks) -> dict[str, float]:
    """Each value summed over all ranks, in one all-reduce (validation reduced across ranks)."""
    if ranks.world == 1:
        return dict(values)
    on = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces only GPU tensors
    t = torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return dict(zip(values, t.tolist()))


def total(value: int | float, ranks: Ranks) -> float:
    """Sum of `value` over all ranks (the value itself in a single process)."""
    return value if ranks.world == 1 else sums({"value": value}, ranks)["value"]


def gather(value, ranks: Ranks) -> list:
    """[value of rank 0, value of rank 1, ...] on every rank (a one-element list in a single process)."""
    if ranks.world == 1:
        return [value]
    out = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out
