"""The training loop shared by every family: the task supplies batches, loss and validation metrics;
this loop owns the optimiser, schedule, clipping, accumulation, checkpoints and logs.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from qkv.checkpoint import save
from qkv.config import Config, require
from qkv.train.optim import OptimConfig


@dataclass(frozen=True)
class LoopConfig(Config):
    steps: int = 1000  # optimiser steps
    batch_size: int = 32  # sequences per micro-batch (tasks that batch by tokens read max_tokens instead)
    grad_accum: int = 1  # micro-batches per optimiser step
    eval_every: int = 250
    log_every: int = 10
    max_minutes: float = 0.0  # stop (after a final evaluation and checkpoint) once training has run this long; 0 = off
    keep_checkpoints: int = 0  # also keep the last N evaluation checkpoints in out/checkpoints/ (for averaging)
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (one per core)
    # "bf16": forward and loss under bfloat16 autocast (weights, gradients and optimiser stay fp32);
    # evaluation stays fp32. Matrix products are faster on bf16 hardware (AMX: 3x here), but for small
    # models the casts can cost more than that saves: docs/PERFORMANCE.md has the measurement.
    precision: Literal["fp32", "bf16"] = "fp32"

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "log_every"):
            require(getattr(self, name) >= 1, f"train.{name} must be at least 1")


class Task(Protocol):
    """What a family's training needs to provide."""

    def train_batch(self) -> Any: ...
    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """(summed loss, number of items it sums over) for one micro-batch."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics; must include "val_loss" (lower is better: it picks `best`)."""
        ...

    def save_extras(self, directory: Path) -> None:
        """Write what a checkpoint needs beside the model (tokenizer files)."""
        ...


class MetricsLog:
    """JSON lines, one object per record, flushed as written."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


def _checkpoint(model: nn.Module, task: Task, directory: Path, meta: dict) -> None:
    save(model, directory)
    task.save_extras(directory)
    (directory / "trainer_state.json").write_text(json.dumps(meta, indent=2) + "\n")


def fit(model: nn.Module, task: Task, loop: LoopConfig, optim: OptimConfig, out: Path, progress: bool = True) -> dict:
    """Train `model` on `task`; writes out/last, out/best and out/metrics.jsonl. Returns final metrics."""
    optimizer = optim.build(model)
    d_model = model.config.d_model
    device = next(model.parameters()).device
    log = MetricsLog(out / "metrics.jsonl")
    best = math.inf
    metrics: dict[str, float] = {}
    bar = tqdm(range(1, loop.steps + 1), desc="training", unit="step", disable=not progress, dynamic_ncols=True)
    window_items, window_start = 0, time.perf_counter()
    started = time.perf_counter()
    for step in bar:
        out_of_time = loop.max_minutes > 0 and time.perf_counter() - started >= 60 * loop.max_minutes
        model.train()
        lr = optim.lr_at(step, d_model)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total, items = 0.0, 0
        for _ in range(loop.grad_accum):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=loop.precision == "bf16"):
                loss, n = task.loss(model, task.train_batch())
            (loss / max(n, 1) / loop.grad_accum).backward()
            total, items = total + loss.item(), items + n
        if optim.clip_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window_items += items
        if step % loop.log_every == 0 or step == loop.steps:
            rate = window_items / (time.perf_counter() - window_start)
            bar.set_postfix(loss=f"{total / max(items, 1):.3f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}")
            log.write(step=step, loss=total / max(items, 1), lr=lr, tokens_per_s=rate)
            window_items, window_start = 0, time.perf_counter()
        if step % loop.eval_every == 0 or step == loop.steps or out_of_time:
            metrics = task.evaluate(model)
            log.write(step=step, **metrics)
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            meta = {"step": step, **metrics}
            _checkpoint(model, task, out / "last", meta)
            if loop.keep_checkpoints:
                _checkpoint(model, task, out / "checkpoints" / f"step-{step:07d}", meta)
                for old in sorted((out / "checkpoints").iterdir())[: -loop.keep_checkpoints]:
                    shutil.rmtree(old)
            if metrics["val_loss"] < best:
                best = metrics["val_loss"]
                _checkpoint(model, task, out / "best", meta)
        if out_of_time:
            bar.write(f"stopping at step {step}: train.max_minutes={loop.max_minutes} reached")
            break
    return {"best_val_loss": best, "steps": step, "train_minutes": (time.perf_counter() - started) / 60, **metrics}
