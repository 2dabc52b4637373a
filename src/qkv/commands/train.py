"""qkv train: train any family from a TOML run config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from qkv.commands import UsageError, writable

if TYPE_CHECKING:
    from qkv.train.distributed import Ranks


def cmd_train(args: argparse.Namespace) -> int:
    from qkv.train import distributed

    ranks = distributed.init()  # several processes when started by torchrun
    ended = False
    try:
        code = _train(args, ranks)
        ended = True
        return code
    finally:
        distributed.finish(ranks, together=ended)


def _train(args: argparse.Namespace, ranks: Ranks) -> int:
    import json

    import torch

    from qkv.checkpoint import read_config
    from qkv.tasks.registry import TASKS, check_best_metric
    from qkv.train import distributed
    from qkv.train.loop import LoopConfig, fit, resumable_checkpoint
    from qkv.train.optim import for_run as optim_for_run
    from qkv.train.runconfig import load_run_config, section_config
    from qkv.train.state import check_readable, saved_step

    run = load_run_config(args.config, args.set)
    source = run["_source"]
    if run["task"] not in TASKS:
        raise UsageError(f"{source}: task must be one of {sorted(TASKS)}, got {run['task']!r}")
    loop = section_config(run, "train", LoopConfig)
    check_best_metric(run, loop.best_metric)
    optim = optim_for_run(run, loop.steps)
    distributed.device(loop.device)  # a device that is not there is an error before anything is written
    out = writable(Path(run["out"]), "directory", f"`out` in {source}")
    resume = resumable_checkpoint(Path(args.resume)) if args.resume else None
    if resume is not None:
        _check_resume_goes_on(resume, loop)
    # a resumed run writes into `out`: its own directory, or a new one (a fork), never another run's
    own = resume is not None and out.resolve() == resume.parent.resolve()
    if not own and out.exists() and any(out.iterdir()) and not args.overwrite:
        if resume is None:
            raise UsageError(f"{out}: already holds a run (--resume {out} continues it, --overwrite replaces it)")
        raise UsageError(
            f"{out}: already holds another run, which resuming {resume} there would write over (set `out` "
            f"to {resume.parent} to continue that run in place, or to a new directory; --overwrite replaces it)"
        )
    if loop.threads:
        torch.set_num_threads(loop.threads)
    # A resumed run reads the tokenizer its checkpoint saved instead of training one again: the WordPiece
    # trainer breaks ties by hash order, so a second training need not give the same vocabulary.
    run["_resume"] = str(resume) if resume is not None else None
    model, task = TASKS[run["task"]](run, loop)  # reads and checks the data before anything is written
    if resume is not None and read_config(resume)[1] != model.config:
        raise UsageError(f"{resume}/config.json: the model there differs from the one {source} describes")
    if resume is not None:
        check_readable(resume)
    if resume is not None and ranks.main:
        _say_if_the_schedule_changed(resume, optim, saved_step(resume) + 1, model.config.d_model)
        _say_if_best_is_picked_anew(resume, loop.best_metric)
    if ranks.world > 1:
        torch.distributed.barrier()  # every rank has checked the output directory before rank 0 writes to it
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        if not own:  # a fresh log: the run's own log goes on only in its own directory
            (out / "metrics.jsonl").unlink(missing_ok=True)
        _write_resolved(out / "run_config.json", run, model.config, optim)
        n_params = sum(p.numel() for p in model.parameters())
        where = f"; {ranks.world} processes ({loop.parallel.upper()})" if ranks.world > 1 else ""
        print(
            f"{run['task']}: {model.family} model with {n_params:,} parameters; writing to {out}{where}",
            file=sys.stderr,
        )
    result = fit(model, task, loop, optim, out, progress=not args.no_progress, resume=resume, ranks=ranks)
    if ranks.main:
        print(json.dumps(result))
    return {"SIGINT": 130, "SIGTERM": 143}.get(result["interrupted"], 0)


def _check_resume_goes_on(resume: Path, loop) -> None:
    """Refuse a resume that would train nothing, or stop again at its first evaluation: the run is at
    train.steps already, or train.patience had stopped it (each says which setting to raise)."""
    from qkv.train.bookkeeping import Best
    from qkv.train.state import saved_record

    record = saved_record(resume)
    done, best = int(record["step"]), Best.restored(record, loop.best_metric)
    if done >= loop.steps:
        raise UsageError(
            f"{resume}: the run is already at step {done} of train.steps = {loop.steps}, so there is nothing "
            f"to train (to go on, raise it: --set train.steps={2 * done})"
        )
    if loop.patience and best.stale >= loop.patience:
        raise UsageError(
            f"{resume}: the run stopped early, its last {best.stale} evaluations brought {best.no_better()} "
            f"(train.patience = {loop.patience}); to go on anyway, raise it: "
            f"--set train.patience={best.stale + loop.patience}"
        )


def _say_if_best_is_picked_anew(resume: Path, metric: str) -> None:
    """A run that picked `best` by another metric than `train.best_metric` now counts afresh: one line says so."""
    from qkv.train.bookkeeping import Best
    from qkv.train.state import saved_record

    before = Best.metric_of(saved_record(resume))
    if before != metric:
        print(
            f"qkv train: note: {resume.parent} picked best/ by {before}; from here on by {metric} "
            "(train.best_metric), counted afresh, so the next evaluation replaces best/",
            file=sys.stderr,
        )


def _say_if_the_schedule_changed(resume: Path, optim, step: int, d_model: int) -> None:
    """A resumed run may change its optimiser settings (raising train.steps moves the default end of
    cosine decay with it), but the learning rate then jumps: one line on stderr says so."""
    import json

    from qkv.config import ConfigError
    from qkv.train.optim import OptimConfig

    try:
        saved = json.loads((resume.parent / "run_config.json").read_text(encoding="utf-8"))["optim"]
        if set(saved) != set(OptimConfig.field_names()):  # an older run's file: only the section as written
            return
        before = OptimConfig.from_dict(saved)
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return  # nothing to compare with
    changes = [f"{k} {v} -> {getattr(optim, k)}" for k, v in before.to_dict().items() if getattr(optim, k) != v]
    if changes:
        was, now = before.lr_at(step, d_model), optim.lr_at(step, d_model)
        print(
            f"qkv train: warning: the optimiser settings differ from the run's ({', '.join(changes)}); "
            f"the learning rate at step {step} is {now:.3g}, where the run would have had {was:.3g}",
            file=sys.stderr,
        )


def _write_resolved(path: Path, run: dict, model_config, optim) -> None:
    """The config as the run uses it: the file's values, with the model's and the optimiser's fields
    filled in from the preset and the task's defaults (`optim.for_run`)."""
    import json

    resolved = {k: v for k, v in run.items() if not k.startswith("_")}
    resolved |= {"model": model_config.to_dict(), "optim": optim.to_dict()}
    path.write_text(json.dumps(resolved, indent=2) + "\n")


def add_parsers(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model from a TOML run config",
        description="Train the model a TOML config describes (see configs/). Writes OUT/best, OUT/last "
        "(checkpoint directories; last is resumable), OUT/metrics.jsonl and OUT/run_config.json. "
        "Ctrl-C (or SIGTERM) saves OUT/last and stops; a second one stops at once. To fine-tune, start "
        "from a checkpoint: --set init=DIR (its shape, tokenizer and weights).",
    )
    train.add_argument("config", help="TOML run config, e.g. configs/shakespeare_char.toml")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.steps=100",
    )
    train.add_argument("--overwrite", action="store_true", help="replace a previous run in the output directory")
    train.add_argument(
        "--resume",
        metavar="DIR",
        help="continue a run exactly where it stopped: its output directory, or a checkpoint in it",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(handler=cmd_train)
