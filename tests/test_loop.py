"""The shared training loop: precision, time limit, checkpoints and logs."""

import json

import pytest
import torch

from qkv.checkpoint import load
from qkv.data.lm import LMData
from qkv.data.tokenizers import CharTokenizer
from qkv.models.gpt import GPT, GPTConfig
from qkv.tasks.lm import LMDataConfig, LMTask
from qkv.train.loop import LoopConfig, fit
from qkv.train.optim import OptimConfig

TEXT = "abcdefghij" * 200


def _setup(loop: LoopConfig):
    tok = CharTokenizer.train(TEXT)
    data = LMData(tok.encode(TEXT), 0.1, block_size=16)
    torch.manual_seed(0)
    model = GPT(
        GPTConfig(
            vocab_size=tok.vocab_size,
            block_size=16,
            d_model=32,
            n_heads=2,
            n_layers=1,
            d_ff=64,
            dropout=0.0,
            attention_dropout=0.0,
        )
    )
    return model, LMTask(LMDataConfig(files=("unused",), eval_batches=2), loop, tok, data)


def test_bf16_autocast_trains_and_keeps_fp32_weights(tmp_path):
    loop = LoopConfig(steps=60, batch_size=8, eval_every=60, precision="bf16")
    model, task = _setup(loop)
    result = fit(
        model, task, loop, OptimConfig(schedule="constant", lr=3e-3, label_smoothing=0.0), tmp_path, progress=False
    )
    assert result["val_loss"] < 1.0  # the sequence is periodic: learnable well below log(10) = 2.3
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_max_minutes_stops_with_a_final_checkpoint(tmp_path):
    loop = LoopConfig(steps=10_000, batch_size=4, eval_every=5000, max_minutes=1e-9)
    model, task = _setup(loop)
    result = fit(model, task, loop, OptimConfig(schedule="constant", lr=1e-3), tmp_path, progress=False)
    assert result["steps"] == 1
    assert json.loads((tmp_path / "last" / "trainer_state.json").read_text())["step"] == 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in records)


def test_compiled_training_follows_eager_training_and_saves_plain_weights(tmp_path):
    from torch._dynamo.utils import counters

    results = {}
    counters.clear()
    for mode in ("off", "default"):
        loop = LoopConfig(steps=6, batch_size=8, eval_every=3, log_every=1, compile=mode)
        model, task = _setup(loop)
        (tmp_path / mode).mkdir()
        fit(model, task, loop, OptimConfig(schedule="constant", lr=3e-3), tmp_path / mode, progress=False)
        lines = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        results[mode] = [r["loss"] for r in lines if "loss" in r] + [r["val_loss"] for r in lines if "val_loss" in r]
        assert type(load(tmp_path / mode / "best")) is GPT  # the checkpoint names no compile wrapper
    assert counters["stats"]["unique_graphs"] >= 1  # the "default" run did go through the compiler
    assert len(results["off"]) == 8 and results["default"] == pytest.approx(results["off"], rel=1e-5)
