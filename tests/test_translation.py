"""Translation end to end: data checks, batching, and train -> translate -> evaluate -> average from the CLI."""

import json
import random
from pathlib import Path

import pytest

from qkv.cli import main
from qkv.data.batching import EpochBatches, token_batches
from qkv.data.parallel import read_lines, read_parallel
from qkv.data.text import DataError
from qkv.tasks.registry import METRICS

LEXICON = {
    "the": "der",
    "red": "rote",
    "cat": "kater",
    "dog": "hund",
    "sees": "sieht",
    "big": "grosse",
    "small": "kleine",
    "house": "haus",
    "a": "ein",
    "runs": "rennt",
    "fast": "schnell",
}


def write_corpus(d, n=300, seed=0):
    rng = random.Random(seed)
    words = list(LEXICON)
    src = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 7))) for _ in range(n)]
    (d / "train.en").write_text("\n".join(src) + "\n")
    (d / "train.de").write_text("\n".join(" ".join(LEXICON[w] for w in s.split()) for s in src) + "\n")
    return src


def tiny_run_config(tmp_path, out: str, valid: str, bleu_sentences: int, model_extra: str = "") -> Path:
    """A two-step translation run of a 16-wide one-layer model on write_corpus's pairs, validated on
    tmp_path/valid.{en,de}; model_extra: more [model] lines."""
    config = tmp_path / "mt.toml"
    config.write_text(f"""task = "translation"
out = "{tmp_path / out}"
[data]
train_src = "{tmp_path / "train.en"}"
train_tgt = "{tmp_path / "train.de"}"
valid_src = "{tmp_path / valid}.en"
valid_tgt = "{tmp_path / valid}.de"
vocab_size = 60
max_tokens = 512
bleu_sentences = {bleu_sentences}
[model]
preset = "small"
d_model = 16
n_heads = 2
n_encoder_layers = 1
n_decoder_layers = 1
d_ff = 32
{model_extra}[train]
steps = 2
eval_every = 2
""")
    return config


def test_unequal_line_counts(tmp_path):
    (tmp_path / "a").write_text("x\ny\nz\n")
    (tmp_path / "b").write_text("x\ny\n")
    with pytest.raises(DataError, match="has 3 lines but .* has 2"):
        read_parallel(tmp_path / "a", tmp_path / "b")


def test_invalid_utf8_names_file_and_line(tmp_path):
    (tmp_path / "a").write_bytes(b"ok\nalso ok\nbad \xff here\n")
    (tmp_path / "b").write_text("1\n2\n3\n")
    with pytest.raises(DataError, match=r"a:3: invalid UTF-8"):
        read_parallel(tmp_path / "a", tmp_path / "b")


def test_over_long_line(tmp_path):
    (tmp_path / "a").write_text("short\n" + "word " * 3000 + "\n")
    (tmp_path / "b").write_text("kurz\nlang\n")
    with pytest.raises(DataError, match=r"a:2: line of 15,001 bytes is longer than 10,000"):
        read_parallel(tmp_path / "a", tmp_path / "b")


def test_empty_lines_error_or_skip(tmp_path):
    (tmp_path / "a").write_text("one\n\nthree\n")
    (tmp_path / "b").write_text("eins\nzwei\ndrei\n")
    with pytest.raises(DataError, match=r"a:2: empty line"):
        read_parallel(tmp_path / "a", tmp_path / "b")
    corpus = read_parallel(tmp_path / "a", tmp_path / "b", empty="skip")
    assert corpus.src == ["one", "three"] and corpus.tgt == ["eins", "drei"] and corpus.skipped_empty == 1


def test_token_batches_respect_the_bound_and_cover_everything():
    rng = random.Random(0)
    src = [rng.randint(1, 60) for _ in range(500)]
    tgt = [rng.randint(1, 60) for _ in range(500)]
    batches = token_batches(src, tgt, 400)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) * max(max(src[i], tgt[i]) for i in b) <= 400
    stream = EpochBatches(batches, seed=0)
    first_epoch = [tuple(stream.next()) for _ in batches]
    assert sorted(first_epoch) == sorted(map(tuple, batches))


def test_cli_train_translate_evaluate_average(tmp_path, capsys, monkeypatch):
    src = write_corpus(tmp_path)
    (tmp_path / "test.en").write_text("\n".join(src[:25]) + "\n")
    (tmp_path / "test.de").write_text("\n".join(" ".join(LEXICON[w] for w in s.split()) for s in src[:25]) + "\n")
    config = tmp_path / "mt.toml"
    config.write_text(f"""
task = "translation"
out = "{tmp_path / "run"}"
[data]
train_src = "{tmp_path / "train.en"}"
train_tgt = "{tmp_path / "train.de"}"
valid_src = "{tmp_path / "test.en"}"
valid_tgt = "{tmp_path / "test.de"}"
vocab_size = 60
max_tokens = 512
bleu_sentences = 10
[model]
preset = "small"
d_model = 32
n_heads = 2
n_encoder_layers = 1
n_decoder_layers = 1
d_ff = 64
[train]
steps = 12
eval_every = 4
keep_checkpoints = 2
best_metric = "val_bleu"
[optim]
lr = 1.0
warmup_steps = 4
""")
    assert main(["train", str(config), "--no-progress"]) == 0
    run = tmp_path / "run"
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
    assert [sorted(r) for r in evals] == [sorted(["step", *METRICS["translation"]])] * 3
    top = max(evals, key=lambda r: r["val_bleu"])  # the first of equal highs: a tie is no new best
    assert json.loads((run / "best" / "trainer_state.json").read_text())["step"] == top["step"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000008", "step-0000012"]
    assert (run / "best" / "tokenizer.json").is_file()
    printed = capsys.readouterr()  # standard output: the result, one JSON line; what it did goes to stderr
    assert json.loads(printed.out)["steps"] == 12 and len(printed.out.splitlines()) == 1
    assert json.loads(printed.out)["best_val_bleu"] == top["val_bleu"]
    assert "tokenizer: training one shared BPE vocabulary" in printed.err and "training pairs: " in printed.err

    monkeypatch.setattr("sys.stdin", open(tmp_path / "test.en"))
    assert main(["translate", "--model", str(run / "best"), "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 25

    assert main(["translate", "--model", str(run / "last"), "--input", str(tmp_path / "test.en"), "--beam", "1"]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert len(greedy) == 25
    # blank lines stay blank (not a translation of nothing) and leave the others as they were
    lines = (tmp_path / "test.en").read_text().splitlines()
    (tmp_path / "gaps.en").write_text(f"{lines[0]}\n\n  \n{lines[1]}\n")
    assert main(["translate", "--model", str(run / "last"), "--input", str(tmp_path / "gaps.en"), "--beam", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == [greedy[0], "", "", greedy[1]]

    # inputs longer than every training source are translated, with one note naming the first of them
    longest = json.loads((run / "last" / "training_lengths.json").read_text())["longest_source"]
    assert 2 <= longest <= 7 * 4  # 2-7 words a sentence, each in at most a few subwords
    assert "note:" not in capsys.readouterr().err  # (none for the inputs above)
    long_line = " ".join(src[:20])  # 20 sentences' words: longer than any one of them
    (tmp_path / "long.en").write_text(f"{lines[0]}\n{long_line}\n{lines[1]}\n{long_line}\n")
    assert main(["translate", "--model", str(run / "last"), "--input", str(tmp_path / "long.en"), "--beam", "1"]) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0::2] == [greedy[0], greedy[1]]
    assert printed.err.strip() == (
        f"qkv translate: note: {tmp_path / 'long.en'}:2 and 1 more are longer than any sentence the model was "
        f"trained on ({longest} tokens): the translation may cover only part of them; give one sentence a line"
    )

    out_file = tmp_path / "hyp.de"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(run / "best"),
                "--src",
                str(tmp_path / "test.en"),
                "--ref",
                str(tmp_path / "test.de"),
                "--output",
                str(out_file),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "BLEU = " in printed and "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp" in printed and "chrF2 = " in printed
    assert len(out_file.read_text().splitlines()) == 25

    assert main(["average", "--run", str(run), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    capsys.readouterr()
    assert (tmp_path / "avg" / "training_lengths.json").read_text() == (
        run / "last" / "training_lengths.json"
    ).read_text()
    assert main(["translate", "--model", str(tmp_path / "avg"), "--input", str(tmp_path / "test.en")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 25
    (tmp_path / "avg" / "training_lengths.json").write_text('{"longest": 3}')  # damaged: one line, exit 2
    assert main(["translate", "--model", str(tmp_path / "avg"), "--input", str(tmp_path / "test.en")]) == 2
    assert "training_lengths.json: not a training-lengths file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "problem, message",
    [
        ("unequal", "has 300 lines but"),
        ("utf8", r"train.en:2: invalid UTF-8"),
        ("empty", r"train.de:3: empty line"),
        ("unknown_key", r"mt.toml:4 \[data\]: unknown key\(s\) \['vocab'\]"),
        ("missing", "no such file"),
    ],
)
def test_bad_training_input_is_one_line_exit_2(tmp_path, capsys, problem, message):
    write_corpus(tmp_path)
    extra = ""
    if problem == "unequal":
        (tmp_path / "train.de").write_text("\n".join((tmp_path / "train.de").read_text().splitlines()[:-1]) + "\n")
    elif problem == "utf8":
        lines = (tmp_path / "train.en").read_bytes().split(b"\n")
        lines[1] = b"caf\xe9"
        (tmp_path / "train.en").write_bytes(b"\n".join(lines))
    elif problem == "empty":
        lines = (tmp_path / "train.de").read_text().split("\n")
        lines[2] = ""
        (tmp_path / "train.de").write_text("\n".join(lines))
    elif problem == "unknown_key":
        extra = "vocab = 5\n"
    elif problem == "missing":
        (tmp_path / "train.en").unlink()
    config = tmp_path / "mt.toml"
    config.write_text(f"""task = "translation"
out = "{tmp_path / "run"}"
[data]
{extra}train_src = "{tmp_path / "train.en"}"
train_tgt = "{tmp_path / "train.de"}"
valid_src = "{tmp_path / "train.en"}"
valid_tgt = "{tmp_path / "train.de"}"
[model]
preset = "small"
""")
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()


def test_missing_relative_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"^data/train\.de: no such file \(looked for from {tmp_path}\)$"):
        read_lines("data/train.de")
    with pytest.raises(DataError, match=rf"^{tmp_path}/x\.txt: no such file$"):  # absolute: nothing to add
        read_lines(tmp_path / "x.txt")


def test_a_byte_order_mark_is_not_text(tmp_path):
    """Notepad's UTF-8 files start with U+FEFF; it once became part of the first sentence (and a TSV
    header that did not name `sentence`)."""
    from qkv.data.text import read_text
    from qkv.tasks.bert import read_tsv

    (tmp_path / "a.txt").write_bytes("\ufeffein Hund\r\nzwei\r\n".encode())
    assert read_lines(tmp_path / "a.txt") == ["ein Hund", "zwei"]
    assert read_text(tmp_path / "a.txt") == "ein Hund\r\nzwei\r\n"
    (tmp_path / "s.tsv").write_bytes("\ufeffsentence\tlabel\r\ngood\t1\r\n".encode())
    assert read_tsv(str(tmp_path / "s.tsv")) == (["good"], [1])


def test_learned_positions_bound_what_trains_and_what_translates(tmp_path, capsys):
    """A model with learned positions has no vector past model.max_len: training data that would need
    one is refused up front, validation pairs that would are left out, decoding stops there (it used
    to run to the source length + 50 and fail), and a longer source line is refused by its line."""
    src = write_corpus(tmp_path)
    long = " ".join(["a big red dog"] * 10)  # 40 words: more than 32 positions in any vocabulary
    (tmp_path / "valid.en").write_text("\n".join([*src[:20], long]) + "\n")
    (tmp_path / "valid.de").write_text("\n".join(" ".join(LEXICON[w] for w in s.split()) for s in [*src[:20], long]))
    config = tiny_run_config(tmp_path, "run", "valid", 21, model_extra='positions = "learned"\nmax_len = 32\n')
    assert main(["train", str(config), "--no-progress"]) == 2  # data.max_len's default, 100, does not fit
    err = capsys.readouterr().err
    assert "max_len 100 needs more than the model's 32 learned positions" in err and "data.max_len <= 32" in err
    assert not (tmp_path / "run").exists()
    assert main(["train", str(config), "--no-progress", "--set", "data.max_len=32"]) == 0
    err = capsys.readouterr().err
    assert "validation pairs: 1 left out as longer than the model's 32 positions" in err
    (tmp_path / "x.en").write_text(f"{src[0]}\n{long}\n")
    one = ["translate", "--model", str(tmp_path / "run" / "best"), "--input"]
    (tmp_path / "short.en").write_text(f"{src[0]}\n{src[1]}\n")
    for beam in ("1", "3"):  # both decoders stop at the last learned position (they used to go on and fail)
        assert main([*one, str(tmp_path / "short.en"), "--beam", beam]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2
    assert main([*one, str(tmp_path / "x.en")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x.en'}:2: " in err and "more than the model's 32 learned positions" in err


def test_a_translation_run_can_start_from_a_checkpoint(tmp_path, capsys):
    """`init = DIR` fine-tunes a translator on new pairs with its own tokenizer and weights (before, a
    translation run ignored `init` and trained a new BPE and a new model)."""
    import torch

    from qkv.checkpoint import load
    from qkv.tasks.translation import build
    from qkv.train.loop import LoopConfig
    from qkv.train.runconfig import load_run_config

    write_corpus(tmp_path)
    config = tiny_run_config(tmp_path, "pre", "train", 4)
    assert main(["train", str(config), "--no-progress"]) == 0
    pre = load(tmp_path / "pre" / "best")
    fine_tune = [f"init={tmp_path / 'pre' / 'best'}", f"out={tmp_path / 'ft'}", "data.vocab_size=40"]
    model, task = build(load_run_config(config, fine_tune), LoopConfig())
    assert model.config == pre.config and task.tokenizer.vocab_sizes == (60, 60)  # not a new BPE of 40
    assert all(torch.equal(model.state_dict()[k], v) for k, v in pre.state_dict().items())
    capsys.readouterr()
    sets = [a for s in fine_tune for a in ("--set", s)]
    assert main(["train", str(config), "--no-progress", *sets, "--set", "model.d_ff=64"]) == 2
    assert "`d_ff` is " in capsys.readouterr().err and not (tmp_path / "ft").exists()
    assert main(["train", str(config), "--no-progress", *sets]) == 0
    assert "tokenizer: training" not in capsys.readouterr().err
    assert load(tmp_path / "ft" / "last").config == pre.config


def test_a_length_penalty_with_greedy_decoding_is_noted(tmp_path, capsys):
    from qkv.checkpoint import save
    from qkv.data.subword import PairTokenizer
    from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig

    src = write_corpus(tmp_path, n=50)
    tok = PairTokenizer.train(src, src, 40, True)
    v = tok.vocab_sizes[0]
    cfg = Seq2SeqConfig(v, v, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32)
    save(EncoderDecoder(cfg), tmp_path / "m")
    tok.save(tmp_path / "m")
    base = ["translate", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "train.en"), "--no-progress"]
    assert main([*base, "--beam", "1", "--alpha", "1.0"]) == 0
    assert capsys.readouterr().err == "qkv translate: note: --beam 1 is greedy, so --alpha changes nothing\n"
    for options in (["--beam", "1"], ["--beam", "2", "--alpha", "1.0"]):
        assert main([*base, *options]) == 0 and capsys.readouterr().err == ""
