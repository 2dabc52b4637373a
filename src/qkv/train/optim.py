"""Optimiser and schedule settings, and the paper's base training preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from qkv.config import Config, require
from qkv.train import schedules

Schedule = Literal["noam", "inverse_sqrt", "cosine", "constant"]


@dataclass(frozen=True)
class OptimConfig(Config):
    """Defaults are the paper's (sec 5.3, 5.4): Adam(0.9, 0.98, 1e-9), 4000 warm-up steps, eps_ls 0.1."""

    schedule: Schedule = "noam"
    lr: float = 1.0  # the factor for "noam"; the peak learning rate for the others
    warmup_steps: int = 4000
    total_steps: int = 100_000  # used by "cosine"
    min_lr: float = 0.0  # where "cosine" ends
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    clip_norm: float = 0.0  # 0 disables gradient clipping
    label_smoothing: float = 0.1

    def validate(self) -> None:
        require(self.lr > 0, "lr must be > 0", key="lr")
        require(self.eps > 0, "eps must be > 0", key="eps")
        for name in ("warmup_steps", "total_steps"):
            require(getattr(self, name) >= 1, f"{name} must be at least 1", key=name)
        for name in ("min_lr", "weight_decay", "clip_norm"):
            require(getattr(self, name) >= 0, f"{name} must be at least 0", key=name)
        for name in ("beta1", "beta2", "label_smoothing"):
            require(0.0 <= getattr(self, name) < 1.0, f"{name} must be in [0, 1)", key=name)

    def lr_at(self, step: int, d_model: int) -> float:
        if self.schedule == "noam":
            return schedules.noam(step, d_model, self.warmup_steps, self.lr)
        if self.schedule == "inverse_sqrt":
            return schedules.inverse_sqrt(step, self.lr, self.warmup_steps)
        if self.schedule == "cosine":
            return schedules.cosine(step, self.lr, self.warmup_steps, self.total_steps, self.min_lr)
        return self.lr

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam (AdamW when weight_decay > 0, decaying only matrices)."""
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=0.0, betas=(self.beta1, self.beta2), eps=self.eps)


PAPER_BASE_OPTIM = OptimConfig()  # sec 5.3-5.4 for the base model
