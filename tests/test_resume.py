"""Exact resume, signals and numerical faults in the shared training loop."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qkv.cli import main
from qkv.tasks.lm import LMTask
from qkv.tasks.registry import METRICS

TEXT = "to be, or not to be, that is the question.\n" * 60


def lm_config(tmp: Path, out: str, steps: int = 40, eval_every: int = 10) -> Path:
    (tmp / "t.txt").write_text(TEXT)
    cfg = tmp / f"{out}.toml"
    cfg.write_text(f"""
task = "lm"
out = "{tmp / out}"
[data]
files = ["{tmp / "t.txt"}"]
eval_batches = 2
[model]
preset = "char-tiny"
block_size = 32
d_model = 32
n_heads = 2
n_layers = 2
d_ff = 64
dropout = 0.1
[train]
steps = {steps}
batch_size = 8
eval_every = {eval_every}
log_every = 1
seed = 3
[optim]
schedule = "cosine"
lr = 3e-3
warmup_steps = 5
total_steps = {steps}
label_smoothing = 0.0
""")
    return cfg


def losses(run: Path) -> list[tuple[int, float]]:
    text = (run / "metrics.jsonl").read_text()
    text = text[: text.rfind("\n") + 1]  # a run still writing may have put down only part of its last line
    lines = [json.loads(x) for x in text.splitlines()]
    return [(r["step"], r["loss"]) for r in lines if "loss" in r]


def test_resume_in_process_is_bitwise_equal(tmp_path, capsys):
    full = lm_config(tmp_path, "full")
    assert main(["train", str(full), "--no-progress"]) == 0
    part = lm_config(tmp_path, "part", steps=40)
    assert main(["train", str(part), "--no-progress", "--set", "train.steps=20"]) == 0
    assert main(["train", str(part), "--no-progress", "--resume", str(tmp_path / "part")]) == 0
    assert losses(tmp_path / "part") == losses(tmp_path / "full")  # every step, bit for bit


def test_resume_translation_is_bitwise_equal(tmp_path):
    from test_translation import write_corpus

    write_corpus(tmp_path, n=200)

    def config(out: str) -> Path:
        p = tmp_path / f"{out}.toml"
        p.write_text(f"""task = "translation"
out = "{tmp_path / out}"
[data]
train_src = "{tmp_path / "train.en"}"
train_tgt = "{tmp_path / "train.de"}"
valid_src = "{tmp_path / "train.en"}"
valid_tgt = "{tmp_path / "train.de"}"
vocab_size = 60
max_tokens = 256
bleu_sentences = 0
[model]
preset = "small"
d_model = 32
n_heads = 2
n_encoder_layers = 1
n_decoder_layers = 1
d_ff = 64
[train]
steps = 24
eval_every = 8
log_every = 1
""")
        return p

    assert main(["train", str(config("full")), "--no-progress"]) == 0
    assert main(["train", str(config("part")), "--no-progress", "--set", "train.steps=16"]) == 0
    assert main(["train", str(config("part")), "--no-progress", "--resume", str(tmp_path / "part" / "last")]) == 0
    assert losses(tmp_path / "part") == losses(tmp_path / "full")


def _spawn(cfg: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "qkv", "train", str(cfg), "--no-progress", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and any(s >= step for s, _ in losses(run)):
            return
        time.sleep(0.05)
    raise AssertionError(f"training did not reach step {step}")


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_matches(tmp_path):
    full = lm_config(tmp_path, "full", steps=60, eval_every=7)
    reference = _spawn(full)  # a subprocess like the killed one: the same environment and thread count
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()
    cfg = lm_config(tmp_path, "killed", steps=60, eval_every=7)
    proc = _spawn(cfg)
    _wait_for_step(tmp_path / "killed", random.Random().randint(10, 45), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _spawn(cfg, "--resume", str(tmp_path / "killed"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    expected = dict(losses(tmp_path / "full"))
    got = losses(tmp_path / "killed")  # steps after the checkpoint appear twice: killed run, then resumed
    assert {s for s, _ in got} == set(expected)
    assert all(loss == expected[s] for s, loss in got)


@pytest.mark.slow
def test_sigint_saves_and_exits_cleanly(tmp_path):
    cfg = lm_config(tmp_path, "run", steps=100_000, eval_every=1000)
    proc = _spawn(cfg)
    _wait_for_step(tmp_path / "run", 5, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "SIGINT at step" in err
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["step"] >= 5


class NaNAt:
    """Wraps a task so that the loss of the k-th micro-batch is NaN."""

    def __init__(self, task, k):
        self.task, self.k, self.count = task, k, 0

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss(self, model, batch):
        self.count += 1
        loss, n = self.task.loss(model, batch)
        return (loss * float("nan"), n) if self.count == self.k else (loss, n)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nan_loss(tmp_path, policy):
    from test_loop import _setup

    from qkv.train.loop import LoopConfig, TrainingError, fit
    from qkv.train.optim import OptimConfig

    loop = LoopConfig(steps=12, batch_size=4, eval_every=5, on_nan=policy)
    model, task = _setup(loop)
    optim = OptimConfig(schedule="constant", lr=1e-3)
    if policy == "stop":
        with pytest.raises(TrainingError, match="step 8, micro-batch 1 of 1: loss is nan"):
            fit(model, NaNAt(task, 8), loop, optim, tmp_path, progress=False)
        assert json.loads((tmp_path / "last" / "trainer_state.json").read_text())["step"] == 5
    else:
        result = fit(model, NaNAt(task, 8), loop, optim, tmp_path, progress=False)
        assert result["steps"] == 12 and all(torch.isfinite(p).all() for p in model.parameters())


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from test_loop import _setup

    import qkv.checkpoint
    from qkv.train.loop import LoopConfig, TrainingError, fit
    from qkv.train.optim import OptimConfig

    loop = LoopConfig(steps=10, batch_size=4, eval_every=5)
    model, task = _setup(loop)
    real, calls = qkv.checkpoint.save_model, []

    def fail_later(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # step 5 writes best and last; at step 10 the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(qkv.checkpoint, "save_model", fail_later)
    with pytest.raises(TrainingError, match="No space left on device; the previous checkpoint there"):
        fit(model, task, loop, OptimConfig(schedule="constant", lr=1e-3), tmp_path, progress=False)
    assert json.loads((tmp_path / "last" / "trainer_state.json").read_text())["step"] == 5
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(qkv.checkpoint, "save_model", real)
    import qkv as lib

    lib.load(tmp_path / "last")  # complete and loadable


def test_every_crash_point_of_a_checkpoint_swap_leaves_a_resumable_copy(tmp_path):
    """Simulate a kill between each step of replace_directory; a later save must still work."""
    import os

    from qkv.checkpoint import replace_directory
    from qkv.train.loop import resumable_checkpoint

    run, last = tmp_path, tmp_path / "last"

    def fill(n):
        def f(d):
            (d / "training_state.safetensors").write_text(str(n))

        return f

    replace_directory(last, fill(1))
    # killed after the old copy moved aside, before the new one moved in (tmp complete, old present, no last)
    os.replace(last, run / ".last.old")
    (run / ".last.tmp").mkdir()
    fill(2)(run / ".last.tmp")
    assert resumable_checkpoint(run) == run / ".last.old"
    replace_directory(last, fill(3))
    assert (last / "training_state.safetensors").read_text() == "3"
    assert sorted(p.name for p in run.iterdir()) == ["last"]


def test_half_written_metrics_line_is_dropped(tmp_path):
    from qkv.train.loop import MetricsLog

    (tmp_path / "m.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    MetricsLog(tmp_path / "m.jsonl").write(step=2, loss=1.5)
    assert [json.loads(x)["step"] for x in (tmp_path / "m.jsonl").read_text().splitlines()] == [1, 2]


def _bert_pretrain_config(tmp_path: Path, out: str) -> Path:
    from test_bert_cli import MODEL

    p = tmp_path / f"{out}.toml"
    p.write_text(f"""task = "bert_pretrain"
out = "{tmp_path / out}"
[data]
docs = "{tmp_path / "docs"}"
vocab_size = 100
max_len = 32
val_pairs = 10
{MODEL}
[train]
steps = 16
batch_size = 8
eval_every = 8
log_every = 1
[optim]
schedule = "constant"
lr = 1e-3
label_smoothing = 0.0
""")
    return p


def test_resume_bert_pretraining_is_bitwise_equal(tmp_path, monkeypatch):
    from test_bert_cli import write_docs

    from qkv.data.wordpiece import WordPieceTokenizer

    # The two runs here each train a WordPiece vocabulary, and on a corpus this small the `tokenizers`
    # trainer breaks count ties by hash order, so it can pick other pieces the second time; this test is
    # about resuming, so both runs get the first vocabulary (the resumed one reads it from its checkpoint).
    trained, train = {}, WordPieceTokenizer.train.__func__

    def train_once(cls, texts, vocab_size):
        key = (tuple(texts), vocab_size)
        if key not in trained:
            trained[key] = train(cls, list(key[0]), vocab_size)
        return trained[key]

    monkeypatch.setattr(WordPieceTokenizer, "train", classmethod(train_once))
    write_docs(tmp_path / "docs")
    full, part = _bert_pretrain_config(tmp_path, "full"), _bert_pretrain_config(tmp_path, "part")
    assert main(["train", str(full), "--no-progress"]) == 0
    assert main(["train", str(part), "--no-progress", "--set", "train.steps=8"]) == 0
    assert main(["train", str(part), "--no-progress", "--resume", str(tmp_path / "part")]) == 0
    assert losses(tmp_path / "part") == losses(tmp_path / "full")  # masking, pairs and dropout all restored


def test_resumed_run_keeps_its_tokenizer(tmp_path):
    """A resumed run reads the checkpoint's tokenizer; it does not train one again (which, on changed
    text or with a tie the WordPiece trainer breaks another way, would renumber the embedding rows)."""
    from test_bert_cli import write_docs

    write_docs(tmp_path / "docs")
    cfg = _bert_pretrain_config(tmp_path, "part")
    assert main(["train", str(cfg), "--no-progress", "--set", "train.steps=8"]) == 0
    before = (tmp_path / "part" / "last" / "vocab.txt").read_text()
    (tmp_path / "docs" / "zz_new.txt").write_text("þorn æsc ðæt ƿynn. " * 200 + "\n\n" + "ȝogh ƿen þæt. " * 200)
    assert main(["train", str(cfg), "--no-progress", "--resume", str(tmp_path / "part")]) == 0
    assert (tmp_path / "part" / "last" / "vocab.txt").read_text() == before


def test_resume_with_another_model_is_refused(tmp_path, capsys):
    cfg = lm_config(tmp_path, "part", steps=4, eval_every=2)
    assert main(["train", str(cfg), "--no-progress"]) == 0
    last = tmp_path / "part" / "last"
    before = {p.name: p.read_bytes() for p in last.iterdir()}
    capsys.readouterr()
    wider = ["--set", "model.d_model=48", "--set", "train.steps=8", "--resume", str(tmp_path / "part")]
    assert main(["train", str(cfg), "--no-progress", *wider]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qkv train: error: {last}/config.json: the model there differs from the one {cfg} describes"
    )
    assert {p.name: p.read_bytes() for p in last.iterdir()} == before  # the checkpoint is untouched


@pytest.mark.parametrize("damaged", ["model.safetensors", "training_state.safetensors"])
def test_a_damaged_checkpoint_is_refused_before_anything_is_written(tmp_path, capsys, damaged):
    """Once a cut file surfaced as a safetensors traceback after run_config.json had been rewritten."""
    cfg = lm_config(tmp_path, "run", steps=4, eval_every=2)
    assert main(["train", str(cfg), "--no-progress"]) == 0
    run = tmp_path / "run"
    data = (run / "last" / damaged).read_bytes()
    (run / "last" / damaged).write_bytes(data[: len(data) // 2])
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", str(cfg), "--no-progress", "--resume", str(run), "--set", "train.steps=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"qkv train: error: {run / 'last' / damaged}: cannot be read as safetensors (")
    assert len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resuming_a_finished_run_says_to_raise_the_steps(tmp_path, capsys):
    """Resuming at or past train.steps once trained nothing and printed a summary as if it had."""
    cfg = lm_config(tmp_path, "run", steps=4, eval_every=2)
    assert main(["train", str(cfg), "--no-progress"]) == 0
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", str(cfg), "--no-progress", "--resume", str(run)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qkv train: error: {run / 'last'}: the run is already at step 4 of train.steps = 4, so there is nothing"
        " to train (to go on, raise it: --set train.steps=8)"
    )
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert main(["train", str(cfg), "--no-progress", "--resume", str(run), "--set", "train.steps=6"]) == 0
    assert [step for step, _ in losses(run)][-1] == 6
    assert json.loads((run / "run_config.json").read_text())["train"]["steps"] == 6  # what the run last ran with


def test_a_resume_that_moves_the_schedule_says_so(tmp_path, capsys):
    """With total_steps left to its default (train.steps), raising the steps to go on stretches the
    cosine decay: allowed, but the rate jumps, and one line says from what to what."""
    cfg = lm_config(tmp_path, "run", steps=4, eval_every=2)
    cfg.write_text(cfg.read_text().replace("total_steps = 4\n", ""))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "--no-progress", "--resume", str(tmp_path / "run"), "--set", "train.steps=8"]) == 0
    warning = "qkv train: warning: the optimiser settings differ from the run's (total_steps 4 -> 8); "
    assert warning + "the learning rate at step 5 is 0.003, where the run would have had 0" in capsys.readouterr().err
    assert main(["train", str(cfg), "--no-progress", "--resume", str(tmp_path / "run"), "--set", "train.steps=9"]) == 0
    assert "(total_steps 8 -> 9); the learning rate at step 9 is " in capsys.readouterr().err
    cfg.write_text(cfg.read_text() + "total_steps = 9\n")  # the run's end written down: no change, no line
    assert main(["train", str(cfg), "--no-progress", "--resume", str(tmp_path / "run"), "--set", "train.steps=10"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_resuming_into_another_runs_directory_is_refused(tmp_path, capsys):
    """`--resume A` with `out` at another run B once wrote A's continuation over B's checkpoints and
    appended to B's log. Now: refused, B untouched; into a new directory it forks A, A untouched."""
    a, b = lm_config(tmp_path, "a", steps=4, eval_every=2), lm_config(tmp_path, "b", steps=4, eval_every=2)
    assert main(["train", str(a), "--no-progress"]) == 0 and main(["train", str(b), "--no-progress"]) == 0
    files = {run: {p: p.read_bytes() for p in (tmp_path / run).rglob("*") if p.is_file()} for run in "ab"}
    capsys.readouterr()
    more = ["--set", "train.steps=6", "--no-progress"]
    assert main(["train", str(b), "--resume", str(tmp_path / "a"), *more]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qkv train: error: {tmp_path / 'b'}: already holds another run, which resuming {tmp_path / 'a' / 'last'} "
        f"there would write over (set `out` to {tmp_path / 'a'} to continue that run in place, or to a new "
        "directory; --overwrite replaces it)"
    )
    assert {p: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()} == files["b"]
    fork = ["--set", f"out={tmp_path / 'c'}"]
    assert main(["train", str(b), "--resume", str(tmp_path / "a"), *more, *fork]) == 0
    assert [step for step, _ in losses(tmp_path / "c")] == [5, 6]  # a log of its own, from the resumed step
    assert {p: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()} == files["a"]


def _scripted_run(tmp_path, monkeypatch, capsys, evaluations, train_lines: str):
    """An LM run of up to 40 steps, evaluated every 2 with the metrics `evaluations` yields in turn, with
    `train_lines` added to [train]. Returns (config, run directory, result line, stderr)."""
    monkeypatch.setattr(LMTask, "evaluate", lambda self, model, ranks: next(evaluations))
    cfg = lm_config(tmp_path, "run", steps=40, eval_every=2)
    cfg.write_text(cfg.read_text().replace("seed = 3\n", "seed = 3\n" + train_lines))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    return cfg, tmp_path / "run", json.loads(out), err


def test_patience_stops_a_run_that_no_longer_improves_and_a_resume_goes_on_counting(tmp_path, capsys, monkeypatch):
    """train.patience = N: the run stops once N evaluations in a row bring no lower val_loss than the best
    (early stopping); the count travels in `last`, so a resume refuses to start a run that would stop
    again at once, and with a raised patience goes on counting from where it was."""
    losses = [3.0, 2.0, 2.5, 2.1] + [2.2, 1.5, 1.6, 1.7, 1.8, 1.9]  # the validation losses, in order
    scripted = iter([{"val_loss": v} for v in losses])
    cfg, run, result, err = _scripted_run(tmp_path, monkeypatch, capsys, scripted, "patience = 2\n")
    assert (result["steps"], result["best_val_loss"], result["stopped_early"]) == (8, 2.0, True)
    assert (
        "stopping at step 8: the last 2 evaluations brought no lower val_loss than 2.0000 (train.patience = 2)" in err
    )
    assert json.loads((run / "best" / "trainer_state.json").read_text())["step"] == 4  # the best stays the best
    assert json.loads((run / "last" / "trainer_state.json").read_text())["evaluations_since_best"] == 2
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", str(cfg), "--no-progress", "--resume", str(run)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qkv train: error: {run / 'last'}: the run stopped early, its last 2 evaluations brought no lower val_loss"
        " than 2.0000 (train.patience = 2); to go on anyway, raise it: --set train.patience=4"
    )
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # patience 4: 2.2 is the third without a new best, 1.5 starts the count again, 1.6 .. 1.9 end it
    assert main(["train", str(cfg), "--no-progress", "--resume", str(run), "--set", "train.patience=4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["steps"], result["best_val_loss"], result["stopped_early"]) == (20, 1.5, True)
    assert json.loads((run / "best" / "trainer_state.json").read_text())["step"] == 12
    assert next(scripted, None) is None  # every scripted evaluation was used, none more


def test_best_by_a_metric_where_higher_is_better(tmp_path, capsys, monkeypatch):
    """train.best_metric = "accuracy": best/ is the evaluation with the highest accuracy (its val_loss
    notwithstanding) and patience counts evaluations without a higher one. A resume that names
    another metric than the run counted says so and counts that one afresh."""
    monkeypatch.setitem(METRICS, "lm", ("val_loss", "accuracy"))  # the LM task made to report an accuracy
    pairs = [(3.0, 0.2), (2.0, 0.5), (1.9, 0.5), (1.8, 0.4)] + [(1.7, 0.3), (1.6, 0.1)]
    scripted = iter([dict(zip(("val_loss", "accuracy"), pair)) for pair in pairs])
    lines = 'patience = 2\nbest_metric = "accuracy"\n'
    cfg, run, result, err = _scripted_run(tmp_path, monkeypatch, capsys, scripted, lines)
    assert (result["steps"], result["best_accuracy"], result["stopped_early"]) == (8, 0.5, True)
    assert "best_val_loss" not in result and result["val_loss"] == 1.8  # the last evaluation's figures
    assert "the last 2 evaluations brought no higher accuracy than 0.5000 (train.patience = 2)" in err
    assert json.loads((run / "best" / "trainer_state.json").read_text())["step"] == 4  # 0.5 first, not 1.8's step
    state = json.loads((run / "last" / "trainer_state.json").read_text())
    assert (state["best_metric"], state["best_accuracy"], state["evaluations_since_best"]) == ("accuracy", 0.5, 2)
    # by val_loss instead: the stale count was accuracy's, so the run goes on, and says why best/ moves
    by_loss = ["--set", "train.best_metric=val_loss", "--set", "train.steps=12"]
    assert main(["train", str(cfg), "--no-progress", "--resume", str(run), *by_loss]) == 0
    out, err = capsys.readouterr()
    assert f"qkv train: note: {run} picked best/ by accuracy; from here on by val_loss" in err
    assert (json.loads(out)["best_val_loss"], json.loads(out)["steps"]) == (1.6, 12)
    assert json.loads((run / "best" / "trainer_state.json").read_text())["step"] == 12
    assert next(scripted, None) is None  # every scripted evaluation was used, none more


def test_the_metrics_a_task_reports_are_what_best_metric_may_name(tmp_path, capsys):
    """A metric the task does not report, or BLEU that the data section turns off, is refused by its line."""
    cfg = lm_config(tmp_path, "run")
    cfg.write_text(cfg.read_text().replace("seed = 3\n", 'seed = 3\nbest_metric = "val_bleu"\n'))
    line = cfg.read_text().splitlines().index('best_metric = "val_bleu"') + 1
    assert main(["train", str(cfg), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"qkv train: error: {cfg}:{line} [train]: best_metric 'val_bleu' is not a metric of the lm task "
        "(it reports val_loss)"
    )
    mt = tmp_path / "mt.toml"
    mt.write_text(f'task = "translation"\nout = "{tmp_path / "mt"}"\n[data]\nbleu_sentences = 0\n')
    assert main(["train", str(mt), "--no-progress", "--set", "train.best_metric=val_bleu"]) == 2
    assert capsys.readouterr().err.strip() == (
        f'qkv train: error: {mt} [train] (--set train.best_metric=val_bleu): best_metric "val_bleu" needs the '
        "validation BLEU that data.bleu_sentences = 0 turns off"
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "mt").exists()
