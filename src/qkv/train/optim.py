"""Optimiser and schedule settings, and the paper's base training preset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from qkv.config import Config, ConfigError, require
from qkv.nn import native
from qkv.train import schedules

Schedule = Literal["noam", "inverse_sqrt", "cosine", "constant"]


@dataclass(frozen=True)
class OptimConfig(Config):
    """Defaults are the paper's (sec 5.3, 5.4): Adam(0.9, 0.98, 1e-9), 4000 warm-up steps, eps_ls 0.1.
    A run config's [optim] starts from its task's own settings instead (`TASK_DEFAULTS`, `for_run`)."""

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
        if self.schedule == "cosine":
            require(
                self.min_lr <= self.lr,
                f"min_lr {self.min_lr:g} is above lr {self.lr:g}: the cosine decay would raise the rate",
                key="min_lr",
            )

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
        # PyTorch's fused kernel: one pass over all parameters instead of about ten small operations per
        # parameter (its default on the CPU), 4.3 against 11.9 ms an update for the Multi30k model's 97
        # tensors (benchmarks/levers/adam_step.py). Not for FSDP's sharded tensors: they keep the default.
        fused = all(native.plain(p) and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(groups, lr=0.0, betas=(self.beta1, self.beta2), eps=self.eps, fused=fused or None)


PAPER_BASE_OPTIM = OptimConfig()  # sec 5.3-5.4 for the base model

# What [optim] starts from for each task; the section's own keys override these. Translation keeps the
# paper's settings (the class defaults above); the others take their own papers', since the paper's
# label smoothing and eq. (3) are not what a language model or BERT is trained with.
_CLIPPED = dict(clip_norm=1.0, label_smoothing=0.0)  # the three below clip gradients; none smooths labels
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "translation": {},
    # GPT-3 Small, the 125M GPT-2 shape (Brown et al. 2020, Table 2.1, App. B): peak 6e-4, Adam betas
    # (0.9, 0.95), eps 1e-8, clipping at 1.0, weight decay 0.1, cosine decay to 10% of the peak
    "lm": _CLIPPED | dict(schedule="cosine", lr=6e-4, min_lr=6e-5, beta2=0.95, eps=1e-8, weight_decay=0.1),
    # BERT pre-training (Devlin et al. 2019, App. A.2): 1e-4, beta2 0.999, weight decay 0.01, warm-up then decay
    "bert_pretrain": _CLIPPED | dict(schedule="cosine", lr=1e-4, beta2=0.999, eps=1e-6, weight_decay=0.01),
    # BERT fine-tuning (App. A.3): the middle of its 5e-5, 3e-5, 2e-5; otherwise as pre-training
    "classify": _CLIPPED | dict(schedule="cosine", lr=3e-5, beta2=0.999, eps=1e-6, weight_decay=0.01),
}
# warm-up as a share of train.steps where the section gives none: BERT's 10,000 of 1M steps (1%) and
# nanoGPT's 100 of 5,000 on Tiny Shakespeare (2%) for pre-training; 10% for fine-tuning, as BERT's
# released fine-tuning code does
WARMUP_SHARE = {"lm": 0.02, "bert_pretrain": 0.02, "classify": 0.1}
# the schedules that read each key; "constant" reads only lr
USED_BY = {"warmup_steps": ("noam", "inverse_sqrt", "cosine"), "total_steps": ("cosine",), "min_lr": ("cosine",)}


def for_run(run: dict[str, Any], steps: int) -> OptimConfig:
    """The run config's [optim] over its task's defaults. Where the section does not say, cosine decay
    ends at the run's last step (total_steps = train.steps) and warm-up is WARMUP_SHARE of the steps."""
    from qkv.train.runconfig import note_unused, section_config, where

    given = run["optim"]
    schedule = given.get("schedule", TASK_DEFAULTS.get(run["task"], {}).get("schedule", "noam"))
    for key, readers in USED_BY.items():
        if schedule in get_args(Schedule) and schedule not in readers:  # (an unknown one is refused below)
            quoted = " or ".join(f'"{s}"' for s in readers)
            note_unused(run, "optim", key, f'with schedule = {quoted} (this one is "{schedule}")')
    defaults = {**TASK_DEFAULTS.get(run["task"], {}), "total_steps": steps}
    if run["task"] in WARMUP_SHARE:
        defaults["warmup_steps"] = max(1, round(WARMUP_SHARE[run["task"]] * steps))
    peak = given.get("lr")
    if isinstance(peak, (int, float)) and "min_lr" in defaults:  # the decay ends at the same share of this peak
        defaults["min_lr"] = defaults["min_lr"] / defaults["lr"] * peak
    merged = defaults | given
    if merged.get("schedule", "noam") != "noam" and "lr" not in merged:
        raise ConfigError(
            f"{where(run, 'optim', 'schedule')}: schedule {merged['schedule']!r} needs `lr`, the peak learning rate "
            '(the default 1.0 is the factor on eq. (3) of the "noam" schedule)',
            key="lr",
        )
    if run["task"] != "translation" and merged.get("label_smoothing", 0.0) != 0.0:
        raise ConfigError(
            f"{where(run, 'optim', 'label_smoothing')}: label smoothing applies to the translation task only",
            key="label_smoothing",
        )
    return section_config({**run, "optim": merged}, "optim", OptimConfig)
