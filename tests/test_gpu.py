"""The same code on a CUDA device: what the CPU tests check, and the paths only a GPU takes (bf16
autocast, FlashAttention inside SDPA). Skipped where torch sees no GPU, as in CI; on a machine with one:
`python -m pytest -m gpu`."""

import json

import pytest
import torch
from conftest import random_tokens, tiny_config
from test_distributed import _task_config
from test_gpt import tiny_gpt
from test_loop import _setup
from test_resume import lm_config
from torch.nn.attention import SDPBackend, sdpa_kernel

from qkv.checkpoint import load
from qkv.cli import main
from qkv.decoding.generate import generate
from qkv.decoding.graphed import GraphedSteps
from qkv.decoding.translate import translate_ids
from qkv.models.bert import Bert, BertConfig
from qkv.models.seq2seq import EncoderDecoder
from qkv.train.loop import LoopConfig, fit
from qkv.train.optim import OptimConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error of a against the reference b, over the whole tensor."""
    return ((a.float().cpu() - b.float()).norm() / b.float().norm()).item()


def test_every_family_computes_on_the_gpu_what_it_does_on_the_cpu():
    torch.manual_seed(0)
    seq2seq = EncoderDecoder(tiny_config()).eval()
    gpt = tiny_gpt()
    bert = Bert(BertConfig(vocab_size=50, max_len=32, d_model=32, n_heads=4, n_layers=2, d_ff=64)).eval()
    src, tgt = random_tokens(3, 9), random_tokens(3, 7)
    src[0, 6:] = 0  # padding: the mask travels with the batch
    runs = [
        (seq2seq, lambda m, d: m(src.to(d), tgt.to(d))),
        (gpt, lambda m, d: m(tgt.to(d)).logits),
        (bert, lambda m, d: m(src.to(d), torch.zeros_like(src).to(d)).logits),
    ]
    with torch.no_grad():
        for model, run in runs:
            cpu = run(model, "cpu")
            gpu = run(model.to("cuda"), "cuda")
            assert gpu.device.type == "cuda" and _close(gpu, cpu) < 1e-5  # fp32 both sides (TF32 is off by default)


def test_bf16_causal_attention_runs_in_the_flash_kernel_and_matches_fp32():
    # SDPA may fall back silently to another kernel; held to FlashAttention, a call it cannot serve raises.
    model = tiny_gpt(block_size=256, d_model=128, n_heads=2).to("cuda")  # flash wants head dim 64
    tokens = torch.randint(0, 50, (4, 200), device="cuda")
    with torch.no_grad():
        reference = model(tokens).logits
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            full = model(tokens).logits
            cache = model.new_cache()
            model(tokens[:, :100], cache)
            step = model(tokens[:, 100:101], cache).logits  # one query against 100 cached positions
    assert _close(full, reference.cpu()) < 2e-2  # bf16 operands: errors of 1e-3 to 1e-2 are expected
    assert _close(step[:, 0], reference[:, 100].cpu()) < 2e-2


def test_a_replayed_cuda_graph_step_gives_the_full_forward_logits():
    model = tiny_gpt(block_size=128).to("cuda")
    tokens = torch.randint(0, 50, (1, 100), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = model(tokens.to("cuda")).logits
        steps = GraphedSteps(model, capture=True)
        logits = [steps(tokens[0, :7].tolist(), 0)]
        logits += [steps([int(tokens[0, t])], t).clone() for t in range(7, 100)]  # replays overwrite their output
    assert sorted(steps.replays) == [32, 64, 128]  # one graph per window length, recorded when first needed
    assert (torch.stack(logits, 1) - full[:, 6:]).abs().max() <= 1e-5


def test_cached_generation_and_decoding_on_the_gpu_equal_the_cpu():
    gpt = tiny_gpt(dropout=0.0)  # context 32: 40 new tokens also cross the window's refill
    prompt = [1, 2, 3, 4]
    on_cpu = [list(generate(gpt, prompt, 40, temperature=0.0, use_cache=c)) for c in (True, False)]
    gpt.to("cuda")
    # on the GPU the cached steps replay a CUDA graph by default; record_steps=False is the plain cache
    runs = [dict(use_cache=True), dict(use_cache=True, record_steps=False), dict(use_cache=False)]
    assert [list(generate(gpt, prompt, 40, temperature=0.0, **r)) for r in runs] == [on_cpu[0], *on_cpu]

    torch.manual_seed(1)
    seq2seq = EncoderDecoder(tiny_config()).eval()
    sources = [random_tokens(1, n)[0].tolist() for n in (3, 8, 5, 11)]
    with torch.inference_mode():
        expected = [translate_ids(seq2seq, sources, beam) for beam in (1, 4)]
        seq2seq.to("cuda")
        assert [translate_ids(seq2seq, sources, beam) for beam in (1, 4)] == expected


@pytest.mark.parametrize("task", ["lm", "translation", "bert_pretrain", "classify"])
def test_every_family_trains_on_the_gpu_in_bf16_and_its_checkpoint_loads_on_the_cpu(tmp_path, task):
    cfg = lm_config(tmp_path, "lm", steps=4, eval_every=2) if task == "lm" else _task_config(tmp_path, task)
    on_gpu = ["--set", "train.device=cuda", "--set", "train.precision=bf16"]
    assert main(["train", str(cfg), "--no-progress", *on_gpu]) == 0
    model = load(tmp_path / task / "best")
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in model.parameters())


def test_training_compiled_with_cuda_graphs_follows_eager_training(tmp_path):
    losses = {}
    for mode in ("off", "reduce-overhead"):
        loop = LoopConfig(steps=6, batch_size=8, eval_every=3, log_every=1, device="cuda", compile=mode)
        model, task = _setup(loop)
        (tmp_path / mode).mkdir()
        fit(model, task, loop, OptimConfig(schedule="constant", lr=3e-3), tmp_path / mode, progress=False)
        lines = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        losses[mode] = [r["loss"] for r in lines if "loss" in r]
    assert len(losses["off"]) == 6 and losses["reduce-overhead"] == pytest.approx(losses["off"], rel=1e-4)


def test_the_commands_run_on_the_gpu_and_print_what_they_print_on_the_cpu(tmp_path, capsys):
    # Not yet run on a GPU when written (session 9 had no device time left); the paths it drives are
    # the ones the tests above check piece by piece.
    configs = {task: _task_config(tmp_path, task) for task in ("translation", "classify")}
    configs["lm"] = lm_config(tmp_path, "lm", steps=4, eval_every=2)
    for cfg in configs.values():
        assert main(["train", str(cfg), "--no-progress", "--set", "train.device=cpu"]) == 0
    (tmp_path / "in.txt").write_text("a small test\nanother line of text\n")
    commands = [
        ["translate", "--model", str(tmp_path / "translation" / "best"), "--input", str(tmp_path / "in.txt")],
        ["classify", "--model", str(tmp_path / "classify" / "best"), "--input", str(tmp_path / "in.txt")],
        ["generate", "--model", str(tmp_path / "lm" / "best"), "--prompt", "to be", "--temperature", "0"],
    ]
    capsys.readouterr()
    for command in commands:
        printed = []
        for device in ("cpu", "cuda"):
            assert main([*command, "--device", device]) == 0
            printed.append(capsys.readouterr().out)
        if command[0] == "classify":  # label, tab, probability to 4 decimals: compare labels, and probabilities closely
            printed = [[(int(a), float(b)) for a, b in (x.split("\t") for x in out.splitlines())] for out in printed]
            assert [x[0] for x in printed[1]] == [x[0] for x in printed[0]]
            assert [x[1] for x in printed[1]] == pytest.approx([x[1] for x in printed[0]], abs=2e-4)
        else:
            assert printed[0] and printed[1] == printed[0]
