"""The training loop shared by every family: the task supplies batches, loss and validation metrics;
this loop owns the optimiser, schedule, clipping, accumulation, checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from qkv.checkpoint import CheckpointError, load_weights, replace_directory, save
from qkv.config import Config, require
from qkv.train import TrainingError, distributed, fsdp
from qkv.train.bookkeeping import Best, MetricsLog, StopSignals
from qkv.train.distributed import Ranks
from qkv.train.optim import OptimConfig
from qkv.train.state import load_state, rank_state, save_state


@dataclass(frozen=True)
class LoopConfig(Config):
    steps: int = 1000  # optimiser steps
    batch_size: int = 32  # sequences per micro-batch (tasks that batch by tokens read max_tokens instead)
    grad_accum: int = 1  # micro-batches per optimiser step
    eval_every: int = 250
    log_every: int = 10
    max_minutes: float = 0.0  # stop (after a final evaluation and checkpoint) once training has run this long; 0 = off
    keep_checkpoints: int = 0  # also keep the last N evaluation checkpoints in out/checkpoints/ (for averaging)
    # the validation metric that picks `best/` and that `patience` watches: "val_loss" (lower is better) or
    # one the task reports where higher is better: "val_bleu" (translation), "accuracy" (classify), ...
    best_metric: str = "val_loss"
    # early stopping: stop once this many evaluations in a row do not beat the best best_metric; 0 = off
    patience: int = 0
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default (one per core)
    # "bf16": forward and loss under bfloat16 autocast (weights, gradients and optimiser stay fp32);
    # evaluation stays fp32. Matrix products are faster on bf16 hardware (AMX: 3x here), but for small
    # models the casts can cost more than that saves: docs/PERFORMANCE.md has the measurement.
    precision: Literal["fp32", "bf16"] = "fp32"
    on_nan: Literal["stop", "skip"] = "stop"  # a non-finite loss: stop (last good checkpoint kept) or skip the batch
    # "auto": the GPU when there is one (each torchrun process its LOCAL_RANK's), else the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # with several processes: "ddp" replicates the model on every rank; "fsdp" shards parameters,
    # gradients and optimiser state across them (for models that do not fit one device; train/fsdp.py)
    parallel: Literal["ddp", "fsdp"] = "ddp"
    # torch.compile the training forward (evaluation stays eager). "reduce-overhead" also replays CUDA
    # graphs: on an H100, where launching kernels sets the pace of a small model, it ran the benchmark's
    # seq2seq step 3.5-3.9x faster. Off by default: on the 2-core CPU the compiled step ran 0.83x eager, every
    # run pays the compile (10-30 s), and each new batch shape recompiles (docs/PERFORMANCE.md, levers).
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "log_every"):
            require(getattr(self, name) >= 1, f"train.{name} must be at least 1", key=name)
        for name in ("max_minutes", "keep_checkpoints", "threads", "patience"):
            require(getattr(self, name) >= 0, f"train.{name} must be at least 0", key=name)


class Task(Protocol):
    """What a family's training needs to provide."""

    unit: str  # what `loss` counts ("tokens", "sentences"): the progress bar and the log show <unit>/s

    def train_batch(self) -> Any: ...
    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, int]:
        """(summed loss, number of items it sums over) for one micro-batch."""
        ...

    def evaluate(self, model: nn.Module, ranks: Ranks) -> dict[str, float]:
        """Validation metrics: those `registry.METRICS` lists for the task, "val_loss" first (one of them,
        `train.best_metric`, picks `best`). With several processes each rank evaluates its share
        (`distributed.share`) and reduces the sums."""
        ...

    def save_extras(self, directory: Path) -> None:
        """Write what a checkpoint needs beside the model (tokenizer files)."""
        ...

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The data position (generator states, epoch order) as tensors and JSON values."""
        ...

    def load_state_dict(self, tensors: dict[str, Tensor], extra: dict[str, Any]) -> None: ...

    def shard(self, rank: int, world: int) -> None:
        """With several processes: draw this rank's own share of the training batches."""
        ...


def _checkpoint(model, task, directory: Path, meta: dict, optimizer=None, rank_states=None) -> None:
    """A complete checkpoint directory, swapped in atomically; resumable when given the optimiser and
    every rank's data position and RNG (`rank_states`, from `distributed.gather`)."""

    def fill(tmp: Path) -> None:
        save(model, tmp)
        task.save_extras(tmp)
        if optimizer is not None:
            save_state(tmp, optimizer, rank_states, meta)
        else:
            (tmp / "trainer_state.json").write_text(json.dumps(meta, indent=2) + "\n")

    try:
        replace_directory(directory, fill)
    except OSError as err:  # a full disk, most often: the swap never happened, the old checkpoint stands
        raise TrainingError(
            f"writing {directory}: {err.strerror or err}; the previous checkpoint there (if any) is intact"
        ) from None


def resumable_checkpoint(path: Path) -> Path:
    """The checkpoint to resume from: `path` itself, or a run directory's `last` (or its `.last.old`,
    if a crash came in the middle of swapping in a new one)."""
    for candidate in (path, path / "last", path / ".last.old"):
        if (candidate / "training_state.safetensors").is_file():
            return candidate
    raise CheckpointError(f"{path}: no resumable checkpoint (expected {path}/last/training_state.safetensors)")


def _train_step(model, forward, task, optimizer, loop: LoopConfig, optim: OptimConfig, step: int, device, ranks: Ranks):
    """One optimiser step over grad_accum micro-batches; returns (summed loss, items) of this rank.
    `forward` is the model the loss calls: `model` itself, or its torch.compile wrapper.

    Each micro-batch's loss is divided by the items of that micro-batch on all ranks together, times
    the number of ranks, so that DDP's averaging of gradients gives exactly the gradient of the mean
    loss over the union of the ranks' batches. Gradients are synchronised only on the last micro-batch.
    """
    total, items = 0.0, 0
    for micro in range(loop.grad_accum):
        sync = ranks.world == 1 or micro == loop.grad_accum - 1
        with fsdp.gradient_sync(model, sync):  # forward and backward both inside
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=loop.precision == "bf16"):
                loss, n = task.loss(forward, task.train_batch())
            if not torch.isfinite(loss):
                where = f"step {step}, micro-batch {micro + 1} of {loop.grad_accum}: loss is {loss.item()}"
                optimizer.zero_grad(set_to_none=True)
                if loop.on_nan == "stop":
                    raise TrainingError(
                        f"{where}; stopped (the last good checkpoint is kept; train.on_nan = 'skip' skips such batches)"
                    )
                print(f"warning: {where}; batch skipped", file=sys.stderr, flush=True)
                return math.nan, 0
            n_all = distributed.total(n, ranks)
            (loss * ranks.world / max(n_all, 1) / loop.grad_accum).backward()
        total, items = total + loss.item(), items + n
    if optim.clip_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total, items


def _savable(model, optimizer, optim: OptimConfig):
    """What rank 0 writes: the model and optimiser themselves, or (FSDP) unsharded copies gathered
    from every rank, so that checkpoints look the same however many processes wrote them."""
    return fsdp.gathered(model, optimizer, optim.build) if fsdp.is_sharded(model) else (model, optimizer)


def _evaluate_and_save(model, task, optimizer, loop, optim, out, step, best: Best, log, ranks) -> dict:
    """Every rank evaluates its share and gets the reduced figures (so every rank counts `best` alike
    and they stop together); only rank 0 (log is not None) writes. Returns the metrics.
    A sharded model gathers its weights in every forward, so every rank must run the same forwards:
    there each rank evaluates everything (in lockstep) instead of a share."""
    metrics = task.evaluate(model, Ranks() if fsdp.is_sharded(model) else ranks)
    rank_states = distributed.gather(rank_state(task), ranks)
    model, optimizer = _savable(model, optimizer, optim)
    improved = best.update(metrics)
    if log is None:
        return metrics
    log.write(step=step, **metrics)
    tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), file=sys.stderr)
    if improved:
        _checkpoint(model, task, out / "best", {"step": step, **metrics})
    _checkpoint(model, task, out / "last", {"step": step, **best.record(), **metrics}, optimizer, rank_states)
    if loop.keep_checkpoints:
        _checkpoint(model, task, out / "checkpoints" / f"step-{step:07d}", {"step": step, **metrics})
        for old in sorted((out / "checkpoints").glob("step-*"))[: -loop.keep_checkpoints]:
            shutil.rmtree(old)
    return metrics


def _start(
    model, task, optimizer, optim: OptimConfig, resume: Path | None, ranks: Ranks, metric: str
) -> tuple[int, Best]:
    """Shard the data (several processes) and restore a resumed run; returns (first step, best so far)."""
    if ranks.world > 1:
        task.shard(ranks.rank, ranks.world)  # before resuming, which restores this rank's own data position
    if resume is None:
        return 1, Best(metric)
    if fsdp.is_sharded(model):  # read the single-process layout into plain copies, then shard them in
        plain = fsdp.plain_copy(model)
        plain_opt = optim.build(plain)
        load_weights(plain, resume / "model.safetensors")
        record = load_state(resume, plain_opt, task, ranks.rank, ranks.world)
        fsdp.load_full(model, optimizer, plain, plain_opt)
    else:
        load_weights(model, resume / "model.safetensors", next(model.parameters()).device)
        record = load_state(resume, optimizer, task, ranks.rank, ranks.world)
    return record["step"] + 1, Best.restored(record, metric)


def _agree_to_stop(out_of_time: bool, signals: StopSignals, ranks: Ranks) -> bool:
    """Every rank must stop at the same step, or the others would wait forever: a signal or the time
    limit seen by any rank counts for all. Returns the agreed out-of-time flag."""
    if ranks.world == 1:
        return out_of_time
    out_of_time = distributed.total(out_of_time, ranks) > 0
    if distributed.total(signals.received is not None, ranks) > 0 and signals.received is None:
        signals.received = signal.SIGTERM
    return out_of_time


def _wrap(core, loop: LoopConfig, device: torch.device, ranks: Ranks):
    """(model, forward): the DDP wrapper when several processes train data-parallel (else the model
    itself), and what the training step calls: that, compiled when `loop.compile` asks."""
    model = core
    if ranks.world > 1 and loop.parallel == "ddp":
        model = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    if loop.compile == "off":
        return model, model
    mode = None if loop.compile == "default" else loop.compile  # torch names its default mode None
    return model, torch.compile(model, mode=mode)


def _save_interrupted(core, task: Task, optimizer, optim: OptimConfig, out: Path, meta: dict, ranks: Ranks) -> None:
    """A signal arrived: every rank hands over its data position, the main one writes out/last."""
    states = distributed.gather(rank_state(task), ranks)
    whole, whole_opt = _savable(core, optimizer, optim)
    if ranks.main:
        _checkpoint(whole, task, out / "last", meta, whole_opt, states)


def fit(
    model,
    task: Task,
    loop: LoopConfig,
    optim: OptimConfig,
    out: Path,
    progress: bool = True,
    resume: Path | None = None,
    ranks: Ranks = Ranks(),
) -> dict:
    """Train `model` on `task`; writes out/last (resumable), out/best and out/metrics.jsonl.
    With `resume` (a checkpoint from `resumable_checkpoint`), continue that run exactly."""
    device = distributed.device(loop.device)
    model.to(device)
    if ranks.world > 1 and loop.parallel == "fsdp":
        fsdp.shard(model)  # before the optimiser is built: it must hold the sharded parameters
    optimizer = optim.build(model)
    first, best = _start(model, task, optimizer, optim, resume, ranks, loop.best_metric)
    metrics: dict = {}
    core = model  # the model itself; `model` becomes its DDP wrapper with several processes
    model, forward = _wrap(core, loop, device, ranks)
    log = MetricsLog(out / "metrics.jsonl") if ranks.main else None
    steps = range(first, loop.steps + 1)
    bar = tqdm(steps, desc="training", unit="step", disable=not (progress and ranks.main), dynamic_ncols=True)
    window_items, window_start = 0, time.perf_counter()
    started, step, interrupted, early = time.perf_counter(), first - 1, None, False
    with StopSignals() as signals, contextlib.closing(log) if log is not None else contextlib.nullcontext():
        for step in bar:
            out_of_time = loop.max_minutes > 0 and time.perf_counter() - started >= 60 * loop.max_minutes
            model.train()
            lr = optim.lr_at(step, core.config.d_model)
            for group in optimizer.param_groups:
                group["lr"] = lr
            total, items = _train_step(model, forward, task, optimizer, loop, optim, step, device, ranks)
            out_of_time = _agree_to_stop(out_of_time, signals, ranks)
            window_items += items
            if log is not None and (step % loop.log_every == 0 or step == loop.steps):
                rate = window_items / (time.perf_counter() - window_start)
                loss = total / max(items, 1)
                bar.set_postfix({"loss": f"{loss:.3f}", "lr": f"{lr:.2e}", f"{task.unit}/s": f"{rate:,.0f}"})
                log.write(step=step, loss=loss, lr=lr, **{f"{task.unit}_per_s": rate})
                window_items, window_start = 0, time.perf_counter()
            if step % loop.eval_every == 0 or step == loop.steps or out_of_time:
                metrics = _evaluate_and_save(core, task, optimizer, loop, optim, out, step, best, log, ranks)
            if signals.received is not None:
                interrupted = signal.Signals(signals.received).name
                _save_interrupted(core, task, optimizer, optim, out, {"step": step, **best.record(), **metrics}, ranks)
                tqdm.write(
                    f"{interrupted} at step {step}: saved {out / 'last'}; continue with --resume {out}", file=sys.stderr
                )
                break
            if out_of_time:
                tqdm.write(f"stopping at step {step}: train.max_minutes={loop.max_minutes} reached", file=sys.stderr)
                break
            if (why := best.out_of_patience(loop.patience)) and step < loop.steps:
                early = True
                tqdm.write(f"stopping at step {step}: {why}", file=sys.stderr)
                break
    minutes = (time.perf_counter() - started) / 60
    result = {f"best_{best.metric}": best.value, "steps": step, "train_minutes": minutes, "interrupted": interrupted}
    return {**result, "stopped_early": early, **metrics}
