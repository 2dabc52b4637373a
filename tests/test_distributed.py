"""Two processes under torchrun (gloo, CPU) train exactly as one process on the union of their batches."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_resume import lm_config

from qkv.tasks.registry import TASKS
from qkv.train.loop import LoopConfig, fit
from qkv.train.optim import for_run as optim_for_run
from qkv.train.runconfig import load_run_config


class Union:
    """One process seeing both ranks' batches: each micro-batch is rank 0's and rank 1's, concatenated."""

    def __init__(self, t0, t1):
        self.t0, self.t1 = t0, t1
        t0.shard(0, 2)
        t1.shard(1, 2)

    def __getattr__(self, name):
        return getattr(self.t0, name)

    def train_batch(self):
        (x0, y0), (x1, y1) = self.t0.train_batch(), self.t1.train_batch()
        return torch.cat([x0, x1]), torch.cat([y0, y1])


@pytest.mark.slow
def test_two_processes_equal_one_on_the_union(tmp_path):
    cfg = lm_config(tmp_path, "ddp", steps=6, eval_every=6)
    # Adam's eps is 1e-6 here, not 1e-9: the key projection's bias has an exactly zero true gradient (a
    # constant added to every key shifts all of a query's scores equally, which softmax ignores), so its
    # computed gradient is rounding noise of ~1e-10, which Adam with eps 1e-9 would turn into lr-sized
    # steps that differ between any two summation orders.
    sets = ["--set", "model.dropout=0.0", "--set", "train.grad_accum=2", "--set", 'optim.schedule="constant"']
    sets += ["--set", "optim.eps=1e-6"]
    _torchrun(cfg, 2, *sets)

    run = load_run_config(cfg, [s for s in sets if s != "--set"])
    loop = LoopConfig.from_dict(run["train"])
    model, t0 = TASKS["lm"](run, loop)
    _, t1 = TASKS["lm"](run, loop)
    (tmp_path / "reference").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank (OMP_NUM_THREADS=1): the same summation order in every matmul
    try:
        fit(model, Union(t0, t1), loop, optim_for_run(run, loop.steps), tmp_path / "reference", progress=False)
    finally:
        torch.set_num_threads(threads)  # do not leak into later tests
    ddp = load_file(str(tmp_path / "ddp" / "last" / "model.safetensors"))
    ref = model.state_dict()
    assert max((ddp[k] - ref[k]).abs().max().item() for k in ddp) <= 1e-6

    # validation is split between the ranks and reduced: the same figure as one process on all of it
    val = [
        next(json.loads(x) for x in (tmp_path / p / "metrics.jsonl").read_text().splitlines() if "val_loss" in x)
        for p in ("ddp", "reference")
    ]
    assert len(val) == 2 and val[0]["val_loss"] == pytest.approx(val[1]["val_loss"], rel=1e-5)

    # only rank 0 wrote: every step is logged once, one run_config, no stray files
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x
    ]
    assert steps == list(range(1, 7))
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best", "last", "metrics.jsonl", "run_config.json"]


def _torchrun(cfg, n, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        "-m",
        "qkv",
        "train",
        str(cfg),
        "--no-progress",
        *extra,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    # the head holds what the failing rank printed; the tail, torchrun's summary of which rank died how
    assert done.returncode == 0, done.stderr[:3000] + "\n...\n" + done.stderr[-1500:]
    return done


def _losses(run):
    return [
        (r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r
    ]


@pytest.mark.slow
def test_two_process_checkpoint_resumes_in_two_and_in_one(tmp_path):
    full = lm_config(tmp_path, "full", steps=8, eval_every=4)
    _torchrun(full, 2)
    part = lm_config(tmp_path, "part", steps=8, eval_every=4)
    _torchrun(part, 2, "--set", "train.steps=4")
    _torchrun(part, 2, "--resume", str(tmp_path / "part"))
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")  # every rank continued its own data stream

    one = lm_config(tmp_path, "one", steps=8, eval_every=4)
    _torchrun(one, 2, "--set", "train.steps=4")
    done = subprocess.run(
        [sys.executable, "-m", "qkv", "train", str(one), "--no-progress", "--resume", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "saved by 2 process(es), this run has 1" in done.stdout
    assert [s for s, _ in _losses(tmp_path / "one")] == list(range(1, 9))


EXACT = ["--set", "model.dropout=0.0", "--set", 'optim.schedule="constant"', "--set", "optim.eps=1e-6"]
FSDP = ["--set", 'train.parallel="fsdp"']


@pytest.mark.slow
def test_fsdp_trains_as_ddp_and_its_checkpoints_resume_anywhere(tmp_path):
    # Sharding changes where parameters, gradients and Adam moments live, not what they are: two FSDP ranks
    # reach the parameters two DDP ranks reach (up to the summation order of reduce-scatter vs all-reduce).
    for name, extra in (("ddp", []), ("fsdp", FSDP)):
        done = _torchrun(
            lm_config(tmp_path, name, steps=6, eval_every=3), 2, *EXACT, *extra, "--set", "train.grad_accum=2"
        )
        assert f"2 processes ({name.upper()})" in done.stderr
    ddp, sharded = (load_file(str(tmp_path / n / "last" / "model.safetensors")) for n in ("ddp", "fsdp"))
    assert sharded.keys() == ddp.keys()  # the single-process layout, tied weights included once
    assert max((ddp[k] - sharded[k]).abs().max().item() for k in ddp) <= 1e-5
    assert [r["val_loss"] for r in _records(tmp_path / "fsdp") if "val_loss" in r] == pytest.approx(
        [r["val_loss"] for r in _records(tmp_path / "ddp") if "val_loss" in r], rel=1e-4
    )

    # a checkpoint saved by two FSDP ranks resumes under FSDP (the same losses as without the stop) ...
    part = lm_config(tmp_path, "part", steps=6, eval_every=3)
    _torchrun(part, 2, *EXACT, *FSDP, "--set", "train.grad_accum=2", "--set", "train.steps=3")
    _torchrun(part, 2, *EXACT, *FSDP, "--set", "train.grad_accum=2", "--resume", str(tmp_path / "part"))
    assert _losses(tmp_path / "part") == _losses(tmp_path / "fsdp")
    # ... and in one process; and one process's checkpoint resumes under FSDP
    for n, first, then in (("a", 2, 1), ("b", 1, 2)):
        cfg = lm_config(tmp_path, n, steps=6, eval_every=3)
        _train(cfg, first, *EXACT, "--set", "train.steps=3")
        _train(cfg, then, *EXACT, "--resume", str(tmp_path / n))
        assert [s for s, _ in _losses(tmp_path / n)] == list(range(1, 7))


def _train(cfg, n, *extra):
    if n > 1:
        return _torchrun(cfg, n, *FSDP, *extra)
    done = subprocess.run(
        [sys.executable, "-m", "qkv", "train", str(cfg), "--no-progress", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _task_config(tmp_path, task: str):
    """A few steps of `task` on tiny data: what each family's training reads, written for the test."""
    from test_bert_cli import MODEL, write_docs, write_tsv
    from test_translation import write_corpus

    train = "[train]\nsteps = 4\nbatch_size = 8\neval_every = 2\nlog_every = 1\n"
    optim = '[optim]\nschedule = "constant"\nlr = 1e-3\nlabel_smoothing = 0.0\n'
    if task == "translation":
        write_corpus(tmp_path, n=200)
        t, d = tmp_path / "train", "[data]\nvocab_size = 60\nmax_tokens = 256\nbleu_sentences = 4\n"
        d += "".join(
            f'{k}_{s} = "{t}.{lang}"\n' for k in ("train", "valid") for s, lang in (("src", "en"), ("tgt", "de"))
        )
        model = '[model]\npreset = "small"\nd_model = 32\nn_heads = 2\nd_ff = 64\n'
        model += "n_encoder_layers = 1\nn_decoder_layers = 1\n"
    elif task == "bert_pretrain":
        write_docs(tmp_path / "docs")
        d, model = f'[data]\ndocs = "{tmp_path / "docs"}"\nvocab_size = 100\nmax_len = 32\nval_pairs = 10\n', MODEL
    else:
        write_tsv(tmp_path / "s.tsv")
        d, model = f'[data]\ntrain = "{tmp_path / "s.tsv"}"\nvalid = "{tmp_path / "s.tsv"}"\nmax_len = 16\n', MODEL
    cfg = tmp_path / f"{task}.toml"
    cfg.write_text(f'task = "{task}"\nout = "{tmp_path / task}"\n{d}{model}{train}{optim}')
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("task", ["translation", "bert_pretrain", "classify"])
def test_every_family_trains_under_torchrun(tmp_path, task):
    # The language model is covered above; the tasks' losses must also accept the DDP wrapper, which
    # has the model's parameters but none of its attributes (translation once read `model.config`).
    _torchrun(_task_config(tmp_path, task), 2)
    evals = [r for r in _records(tmp_path / task) if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(math.isfinite(r["val_loss"]) for r in evals)
