"""What several tasks share."""

from __future__ import annotations

import torch


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
