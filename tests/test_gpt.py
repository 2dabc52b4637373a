"""The decoder-only family: parity with Hugging Face GPT-2, the cache, sampling, training, the CLI."""

import io
import json
import shutil

import pytest
import torch

from qkv.checkpoint import load, save
from qkv.cli import main
from qkv.decoding.filters import sample, top_k, top_p
from qkv.decoding.generate import generate
from qkv.decoding.graphed import GraphedSteps
from qkv.models.gpt import GPT, GPTConfig
from qkv.nn.block import TransformerBlock
from qkv.tasks.registry import METRICS


def tiny_gpt(**changes) -> GPT:
    torch.manual_seed(0)
    cfg = dict(
        vocab_size=50, block_size=32, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0, attention_dropout=0.0
    )
    return GPT(GPTConfig(**{**cfg, **changes})).eval()


def test_gpt_is_built_from_the_shared_blocks():
    model = tiny_gpt()
    assert all(type(layer) is TransformerBlock and layer.cross_attn is None for layer in model.blocks.layers)
    assert model.output.weight is model.embed.tokens.weight


@pytest.fixture
def hf_gpt2_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=97,
        n_positions=40,
        n_embd=48,
        n_layer=3,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    return tmp_path, hf


def test_hf_gpt2_parity_and_round_trip(hf_gpt2_dir, capsys):
    import transformers

    tmp, hf = hf_gpt2_dir
    assert main(["convert", "--from-hf", str(tmp / "hf"), "--out", str(tmp / "qkv")]) == 0
    assert "no tokenizer (" in capsys.readouterr().err  # save_pretrained writes none
    ours = load(tmp / "qkv")
    tokens = torch.randint(0, 97, (3, 25))
    with torch.no_grad():
        expected = hf(tokens).logits
        got = ours(tokens).logits
    assert (got - expected).abs().max() <= 1e-4
    assert main(["convert", "--to-hf", str(tmp / "qkv"), "--out", str(tmp / "back")]) == 0
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp / "back").eval()
    with torch.no_grad():
        assert (back(tokens).logits - expected).abs().max() <= 1e-4


def test_convert_refuses_pickles_and_bad_shapes(hf_gpt2_dir, capsys):
    tmp, _ = hf_gpt2_dir
    cfg = json.loads((tmp / "hf" / "config.json").read_text())
    cfg["n_embd"] = 64
    (tmp / "bad").mkdir()
    (tmp / "bad" / "config.json").write_text(json.dumps(cfg))
    (tmp / "bad" / "pytorch_model.bin").write_bytes(b"not read")
    assert main(["convert", "--from-hf", str(tmp / "bad"), "--out", str(tmp / "o1")]) == 2
    assert "pickled weights are never loaded" in capsys.readouterr().err
    (tmp / "bad" / "model.safetensors").write_bytes((tmp / "hf" / "model.safetensors").read_bytes())
    assert main(["convert", "--from-hf", str(tmp / "bad"), "--out", str(tmp / "o2")]) == 2
    assert "has shape" in capsys.readouterr().err
    assert not (tmp / "o2").exists() or not any((tmp / "o2").iterdir())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_embd": None}, "config.json: no 'n_embd' entry"),  # None: the entry is removed
        ({"n_embd": "48"}, "config.json: GPTConfig.d_model: expected int, got str '48'"),
        ({"n_head": 5}, "config.json: d_model=48 is not divisible by n_heads=5"),
    ],
)
def test_convert_names_the_config_entry_it_cannot_use(hf_gpt2_dir, capsys, change, message):
    tmp, _ = hf_gpt2_dir
    cfg = json.loads((tmp / "hf" / "config.json").read_text())
    cfg = {k: v for k, v in (cfg | change).items() if v is not None}
    bad = tmp / f"bad-{len(list(tmp.iterdir()))}"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(cfg))
    assert main(["convert", "--from-hf", str(bad), "--out", str(tmp / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cached_logits_equal_full_forward_at_every_step():
    model = tiny_gpt()
    tokens = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        full = model(tokens).logits
        cache = model.new_cache()
        model(tokens[:, :7], cache)  # a prompt, then one token at a time
        for t in range(7, 20):
            step = model(tokens[:, t : t + 1], cache).logits
            assert (step[:, 0] - full[:, t]).abs().max() <= 1e-5, t


def test_cached_greedy_generation_equals_uncached():
    model = tiny_gpt()
    prompt = [3, 1, 4, 1, 5]
    cached = list(generate(model, prompt, 40, temperature=0.0))
    uncached = list(generate(model, prompt, 40, temperature=0.0, use_cache=False))
    assert cached == uncached and len(cached) == 40  # 45 tokens: passes the 32-position window


def test_generation_ends_at_the_stop_token_without_yielding_it():
    model = tiny_gpt()
    prompt = [3, 1, 4, 1, 5]
    full = list(generate(model, prompt, 40, temperature=0.0))
    first = next(i for i, t in enumerate(full) if i > 0 and t not in full[:i])  # a token's first appearance
    for cached in (True, False):
        assert (
            list(generate(model, prompt, 40, temperature=0.0, use_cache=cached, stop_token=full[first]))
            == (full[:first])
        )


def test_fixed_buffer_steps_give_the_full_forward_logits():
    # the steps a CUDA graph replays (GraphedSteps, here unrecorded): a prompt, then one token at a time
    # into buffers spanning the window, whose unwritten slots hold stale values that the mask must hide
    # (each step reads the first 32, 64 or 128 slots, as the position grows)
    model = tiny_gpt(block_size=128)
    tokens = torch.randint(0, 50, (1, 100), generator=torch.Generator().manual_seed(2))
    full = model(tokens).logits
    steps = GraphedSteps(model, capture=False)
    for cache in steps.cache.layers:  # stale garbage where later positions go
        cache.k, cache.v = torch.randn(1, 4, 128, 8) * 100, torch.randn(1, 4, 128, 8) * 100
    with torch.inference_mode():
        assert (steps(tokens[0, :7].tolist(), 0) - full[:, 6]).abs().max() <= 1e-5
        for t in range(7, 100):
            assert (steps([int(tokens[0, t])], t) - full[:, t]).abs().max() <= 1e-5, t
    assert [steps.window(n) for n in (1, 32, 33, 64, 65, 128)] == [32, 32, 64, 64, 128, 128]


def test_fixed_buffer_generation_equals_uncached_across_window_restarts():
    model = tiny_gpt()
    prompt = [3, 1, 4, 1, 5]
    fixed = list(generate(model, prompt, 70, temperature=0.0, record_steps=True))
    uncached = list(generate(model, prompt, 70, temperature=0.0, use_cache=False))
    assert fixed == uncached and len(fixed) == 70  # 75 tokens: the 32-position window restarts twice


def test_long_prompt_is_cropped_with_a_warning():
    model = tiny_gpt()
    with pytest.warns(UserWarning, match="cropped"):
        out = list(generate(model, list(range(45)), 5, temperature=0.0))
    assert len(out) == 5


def test_top_k_keeps_exactly_k():
    logits = torch.randn(4, 100)
    kept = torch.isfinite(top_k(logits, 7))
    assert (kept.sum(-1) == 7).all()
    assert torch.equal(kept, torch.zeros_like(kept).scatter(-1, logits.topk(7).indices, True))


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = probs.log()
    assert torch.isfinite(top_p(logits, 0.7)).tolist() == [[True, True, False, False, False]]  # 0.5+0.2 reaches 0.7
    assert torch.isfinite(top_p(logits, 0.71)).tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(top_p(logits, 0.3)).tolist() == [[True, False, False, False, False]]
    shuffled = logits[:, torch.tensor([3, 0, 4, 2, 1])]
    assert torch.isfinite(top_p(shuffled, 0.7)).tolist() == [[False, True, False, False, True]]
    for p in (0.0, -1.0):  # nothing reaches p <= 0 before the top token: it alone is kept, never none
        assert torch.isfinite(top_p(shuffled, p)).tolist() == [[False, True, False, False, False]]


def test_sampling_is_reproducible_with_a_seed():
    logits = torch.randn(3, 40)
    a = sample(logits, 0.8, 10, 0.9, torch.Generator().manual_seed(5))
    b = sample(logits, 0.8, 10, 0.9, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(sample(logits, 0.0), logits.argmax(-1))


def test_sampling_from_nan_scores_blames_the_scores():
    """Scores that are NaN or infinite (huge damaged weights) are named as such, not as PyTorch's
    complaint about a probability tensor; `qkv generate` turns that into a one-line error."""
    logits = torch.randn(2, 40)
    logits[1, 7] = float("nan")
    with pytest.raises(FloatingPointError, match="next-token scores are NaN or infinite"):
        sample(logits, 1.0)
    logits[1, 7] = float("inf")
    with pytest.raises(FloatingPointError):
        sample(logits, 0.5, 5)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(temperature=-0.5), "temperature must be >= 0"),
        (dict(temperature=float("nan")), "temperature must be >= 0"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(prompt=[3, 50]), "prompt token id 50 is outside the model's vocabulary \\(0 to 49\\)"),
        (dict(prompt=[-1]), "prompt token id -1 is outside"),
    ],
)
def test_generate_from_python_refuses_settings_it_would_read_otherwise(settings, message):
    """The library call checks what the CLI's parser checks: a negative temperature used to be
    greedy, top_p 1.5 no filter, and an id beyond the vocabulary PyTorch's "index out of range"."""
    settings = {"prompt": [1, 2], **settings}
    with pytest.raises(ValueError, match=message):
        list(generate(tiny_gpt(), max_new_tokens=3, **settings))


TEXT = "to be, or not to be, that is the question.\n" * 40


def test_text_too_short_for_one_window_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("abc\n")
    config = tmp_path / "c.toml"
    config.write_text(f"""task = "lm"
out = "{tmp_path / "run"}"
[data]
files = ["{tmp_path / "t.txt"}"]
[model]
preset = "char-tiny"
""")
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"qkv train: error: {tmp_path / 't.txt'}: the training split has 4 tokens, not more than block_size=64"
        " (give more text, or a smaller model.block_size)"
    )
    assert not (tmp_path / "run").exists()


def test_tiny_gpt_overfits_and_generates_from_the_cli(tmp_path, capsys, monkeypatch):
    (tmp_path / "t.txt").write_text(TEXT)
    (tmp_path / "c.toml").write_text(f"""
task = "lm"
out = "{tmp_path / "run"}"
[data]
files = ["{tmp_path / "t.txt"}"]
eval_batches = 2
[model]
preset = "char-tiny"
block_size = 32
[train]
steps = 150
batch_size = 16
eval_every = 150
[optim]
schedule = "cosine"
lr = 3e-3
warmup_steps = 10
total_steps = 150
label_smoothing = 0.0
""")
    assert main(["train", str(tmp_path / "c.toml"), "--no-progress"]) == 0
    assert '"best_val_loss"' in capsys.readouterr().out
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["val_loss"] < 0.3  # memorised: a uniform guess over 16 characters is 2.8
    assert sorted(last) == sorted(["step", *METRICS["lm"]])
    threads = torch.get_num_threads()
    assert (
        main(
            [
                "generate",
                "--model",
                str(tmp_path / "run" / "best"),
                "--prompt",
                "to be, or ",
                "--temperature",
                "0",
                "--max-new-tokens",
                "30",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    torch.set_num_threads(threads)  # --threads is process-wide; give the other tests theirs back
    assert capsys.readouterr().out.startswith("to be, or not to be, that is the")
    (tmp_path / "prompt.txt").write_text("to be, or ")  # --prompt-file; --samples writes each after a line
    two = ["--prompt-file", str(tmp_path / "prompt.txt"), "--samples", "2", "--temperature", "0"]
    assert main(["generate", "--model", str(tmp_path / "run" / "best"), *two, "--max-new-tokens", "12"]) == 0
    first, second = capsys.readouterr().out.split("\n---------------\n")
    assert first.startswith("to be, or not to be") and first + "\n" == second  # greedy: the same twice
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"to be, or ")))  # --prompt-file - : stdin
    assert (
        main(["generate", "--model", str(tmp_path / "run" / "best"), *two[:1], "-", *two[2:], "--max-new-tokens", "12"])
        == 0
    )
    assert capsys.readouterr().out.split("\n---------------\n") == [first, second]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"  \n")))
    assert main(["generate", "--model", str(tmp_path / "run" / "best"), "--prompt-file", "-"]) == 2
    assert "<stdin>: no text came" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "run" / "best"), "--prompt", ""]) == 2
    assert "--prompt is empty" in capsys.readouterr().err
    (tmp_path / "odd.txt").write_text("to be,\nor #")  # a character the model never saw: file, line, column
    odd = ["--prompt-file", str(tmp_path / "odd.txt")]
    assert main(["generate", "--model", str(tmp_path / "run" / "best"), *odd]) == 2
    assert f"{tmp_path / 'odd.txt'}: line 2, column 4: character '#' is not in" in capsys.readouterr().err
    long = ["generate", "--model", str(tmp_path / "run" / "best"), "--prompt", TEXT[:100], "--max-new-tokens", "8"]
    assert main(long) == 0  # longer than the 32-token window: cropped, with one line on stderr
    assert (
        capsys.readouterr().err
        == "qkv generate: warning: prompt of 100 tokens cropped to its last 24 (context window 32)\n"
    )
    if not torch.cuda.is_available():  # a device that is not there: one line, exit 2
        assert main(["generate", "--model", str(tmp_path / "run" / "best"), "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip().endswith("--device = cuda, but torch sees no CUDA device")
        on_gpu = ["--set", "train.device=cuda", "--set", f'out="{tmp_path / "on_gpu"}"']
        assert main(["train", str(tmp_path / "c.toml"), "--no-progress", *on_gpu]) == 2
        assert capsys.readouterr().err.strip().endswith("train.device = cuda, but torch sees no CUDA device")
        assert not (tmp_path / "on_gpu").exists()  # refused before anything was written
    # a second run into the same directory is refused, and nothing there changes
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    assert main(["train", str(tmp_path / "c.toml"), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before
    # to the Hugging Face layout and back keeps the character table (beside GPT-2's files; before,
    # only vocab.json and merges.txt travelled, so the model came back without a tokenizer)
    pytest.importorskip("transformers")
    assert main(["convert", "--to-hf", str(tmp_path / "run" / "best"), "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] is None  # no such character
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert "no tokenizer" not in capsys.readouterr().err
    greedy = ["--prompt", "to be, or ", "--temperature", "0", "--max-new-tokens", "12"]
    outputs = []
    for model in ("run/best", "back"):
        assert main(["generate", "--model", str(tmp_path / model), *greedy]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].startswith("to be, or not to be")


def test_a_bpe_trained_here_travels_to_the_hf_layout(tmp_path):
    """qkv's own byte-level BPE (tokenizer.json) goes with --to-hf, transformers reads it and gets the
    same ids, and the config's end-of-text id is the tokenizer's (not GPT-2's 50256)."""
    transformers = pytest.importorskip("transformers")
    from qkv.convert.gpt2 import to_hf
    from qkv.data.tokenizers import BPETokenizer

    (tmp_path / "t.txt").write_text("to be, or not to be, that is the question. " * 40 + "<|endoftext|> bé")
    tok = BPETokenizer.train([str(tmp_path / "t.txt")], 300)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, d_model=16, n_heads=2, n_layers=1, d_ff=32))
    save(model, tmp_path / "ck")
    tok.save(tmp_path / "ck")
    to_hf(model, tmp_path / "hf", tokenizer_dir=tmp_path / "ck")
    text = "to be, or not? bé"
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"] == tok.encode(text)
    eot = json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"]
    assert eot == tok.end_of_text == 0


def test_qkv_generate_ends_a_sample_at_end_of_text(tmp_path, capsys):
    """GPT-2 separates documents with <|endoftext|>: a sample ends there (one line on stderr says so),
    unless --ignore-eos."""
    from qkv.data.tokenizers import BPETokenizer

    (tmp_path / "t.txt").write_text("to be, or not to be, that is the question. " * 40)
    tok = BPETokenizer.train([str(tmp_path / "t.txt")], 300)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, d_model=16, n_heads=2, n_layers=1, d_ff=32))
    with torch.no_grad():  # every hidden state becomes the end-of-text embedding, whose logit then wins
        model.blocks.final_norm.weight.zero_()
        model.embed.tokens.weight[tok.end_of_text] *= 20
        model.blocks.final_norm.bias.copy_(model.embed.tokens.weight[tok.end_of_text])
    save(model, tmp_path / "ck")
    tok.save(tmp_path / "ck")
    argv = ["generate", "--model", str(tmp_path / "ck"), "--prompt", "to be", "--max-new-tokens", "5"]
    assert main([*argv, "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert out == "to be\n" and "stopped at <|endoftext|> after 0 tokens" in err
    assert main([*argv, "--temperature", "0", "--ignore-eos"]) == 0
    assert "stopped" not in capsys.readouterr().err  # five end-of-text tokens, which print as nothing


def test_each_file_of_a_bpe_corpus_ends_in_end_of_text(tmp_path):
    """GPT-2's documents end in <|endoftext|>: the token stream of several files has one after each
    (no token spans two files); characters have no such token and are joined."""
    from qkv.data.tokenizers import BPETokenizer, CharTokenizer
    from qkv.tasks.lm import token_stream

    (tmp_path / "t.txt").write_text("to be, or not to be, that is the question. " * 40)
    tok = BPETokenizer.train([str(tmp_path / "t.txt")], 300)
    a, b = "to be, or not", "that is the question"
    assert token_stream(tok, [a, b], ["a", "b"]) == [*tok.encode(a), tok.end_of_text, *tok.encode(b), tok.end_of_text]
    chars = CharTokenizer.train(a + b)
    assert chars.end_of_text is None and token_stream(chars, [a, b], ["a", "b"]) == chars.encode(a + b)


def test_a_gpt_run_can_start_from_a_checkpoint(tmp_path, capsys):
    """`init = DIR` fine-tunes a GPT: the checkpoint's shape, tokenizer and weights (before, only BERT
    classification read `init`, and a GPT run silently started from random weights)."""
    from qkv.config import ConfigError
    from qkv.data.tokenizers import CharTokenizer
    from qkv.tasks.lm import build
    from qkv.train.loop import LoopConfig
    from qkv.train.runconfig import load_run_config

    tok = CharTokenizer.train(TEXT)
    model = tiny_gpt(vocab_size=tok.vocab_size)
    with torch.no_grad():  # unlike any fresh model of the seed a run starts from
        for p in model.parameters():
            p.add_(0.01)
    save(model, tmp_path / "pre")
    tok.save(tmp_path / "pre")
    (tmp_path / "t.txt").write_text(TEXT)
    config = tmp_path / "c.toml"
    config.write_text(f"""task = "lm"
out = "{tmp_path / "run"}"
init = "{tmp_path / "pre"}"
[data]
files = ["{tmp_path / "t.txt"}"]
eval_batches = 2
[model]
preset = "char-tiny"  # ignored: the checkpoint's shape is used
dropout = 0.1         # what fine-tuning may change
[train]
steps = 2
batch_size = 4
eval_every = 2
""")
    built, _ = build(load_run_config(config), LoopConfig())
    assert built.config == model.config.replace(dropout=0.1)
    assert all(torch.equal(built.state_dict()[k], v) for k, v in model.state_dict().items())
    # a shorter context keeps the first learned positions (a longer one has no vectors to start from)
    short, _ = build(load_run_config(config, ["model.block_size=16"]), LoopConfig())
    assert torch.equal(short.embed.positions.weight, model.embed.positions.weight[:16])
    with pytest.raises(ConfigError, match=r"`block_size` may be lowered from .*'s 32 .*, not raised to 48$"):
        build(load_run_config(config, ["model.block_size=48"]), LoopConfig())
    fresh, _ = build(load_run_config(config, ["init_weights=false"]), LoopConfig())
    assert fresh.config == built.config and not torch.equal(fresh.output.weight, model.output.weight)
    capsys.readouterr()

    def refused(*sets: str) -> str:
        args = [a for s in sets for a in ("--set", s)]
        assert main(["train", str(config), "--no-progress", *args]) == 2
        assert not (tmp_path / "run").exists()
        return capsys.readouterr().err.strip()

    # the shape is the checkpoint's: [model] may not change it
    assert refused("model.n_layers=3").endswith(
        f"`n_layers` is {tmp_path / 'pre'}'s (2) when the run starts from it (init); [model] may change only "
        "dropout, attention_dropout, lower block_size"
    )
    (tmp_path / "u.txt").write_text("to be, or\nnot € to be")
    assert refused(f'data.files=["{tmp_path / "u.txt"}"]').endswith(
        f"{tmp_path / 'u.txt'}: line 2, column 5: character '€' is not in the {tok.vocab_size}-character vocabulary"
    )
    save(
        tiny_gpt().__class__(GPTConfig(vocab_size=5, block_size=8, d_model=8, n_heads=2, n_layers=1, d_ff=8)),
        tmp_path / "v",
    )
    assert "tokenizer" in refused(f"init={tmp_path / 'v'}")  # a checkpoint without its tokenizer
    assert main(["train", str(config), "--no-progress"]) == 0
    assert "init: starting from" in capsys.readouterr().err
    assert load(tmp_path / "run" / "last").config == model.config.replace(dropout=0.1)
    # resuming reads the run's own checkpoint: the one it started from may be gone by then
    shutil.rmtree(tmp_path / "pre")
    assert (
        main(["train", str(config), "--no-progress", "--resume", str(tmp_path / "run"), "--set", "train.steps=4"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["steps"] == 4


def test_a_directory_in_data_files_means_its_text_files(tmp_path, capsys):
    from qkv.tasks.lm import text_files

    (tmp_path / "books").mkdir()
    for name in ("b.txt", "a.txt", "README.md"):
        (tmp_path / "books" / name).write_text(TEXT)
    (tmp_path / "one.txt").write_text(TEXT)
    books = str(tmp_path / "books")
    assert text_files((str(tmp_path / "one.txt"), books)) == [
        str(tmp_path / "one.txt"),
        str(tmp_path / "books" / "a.txt"),
        str(tmp_path / "books" / "b.txt"),
    ]
    (tmp_path / "empty").mkdir()
    config = tmp_path / "c.toml"
    config.write_text(f'task = "lm"\nout = "{tmp_path / "run"}"\n[data]\nfiles = ["{tmp_path / "empty"}"]\n')
    assert main(["train", str(config), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{tmp_path / 'empty'}: a directory with no .txt files")


def test_a_bpe_size_for_a_character_model_is_noted(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("abc\n")
    config = tmp_path / "c.toml"
    config.write_text(f'task = "lm"\nout = "{tmp_path / "run"}"\n[data]\nfiles = ["{tmp_path / "t.txt"}"]\n')
    assert main(["train", str(config), "--no-progress", "--set", "data.bpe_vocab_size=300"]) == 2  # 4 characters
    assert capsys.readouterr().err.splitlines()[0] == (
        f"note: {config} [data] (--set data.bpe_vocab_size=300): `bpe_vocab_size` is used only with"
        ' tokenizer = "bpe" (this one is "char"), so not here'
    )


def test_sampling_options_with_greedy_decoding_are_noted(tmp_path, capsys):
    from qkv.data.tokenizers import CharTokenizer

    tok = CharTokenizer.train(TEXT)
    save(tiny_gpt(vocab_size=tok.vocab_size), tmp_path / "m")
    tok.save(tmp_path / "m")
    base = ["generate", "--model", str(tmp_path / "m"), "--prompt", "to be", "--max-new-tokens", "4"]
    assert main([*base, "--temperature", "0", "--top-p", "0.9", "--samples", "2"]) == 0
    out, err = capsys.readouterr()
    first, second = out.split("---------------\n")
    assert first == second  # what the second note says
    assert err.splitlines() == [
        "qkv generate: note: --temperature 0 is greedy, so --top-p changes nothing",
        "qkv generate: note: --temperature 0 is greedy, so the 2 samples are the same",
    ]
    assert main([*base, "--top-p", "0.9", "--seed", "1"]) == 0 and capsys.readouterr().err == ""
