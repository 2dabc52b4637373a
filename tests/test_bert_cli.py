"""BERT end to end from the CLI: pre-train, fine-tune from it, classify."""

import json
import random

import pytest
import torch

from qkv.checkpoint import load
from qkv.cli import main
from qkv.tasks.bert import build_classify, build_pretrain
from qkv.tasks.registry import METRICS
from qkv.train.loop import LoopConfig
from qkv.train.runconfig import load_run_config

WORDS = "the cat dog sat ran on mat big small red house tree river walked slept quickly".split()


def write_docs(d):
    rng = random.Random(0)
    d.mkdir()
    for i in range(8):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "." for _ in range(40)
        ]
        (d / f"doc{i}.txt").write_text("\n\n".join(" ".join(sentences[j : j + 4]) for j in range(0, 40, 4)))


def write_tsv(path, n=40):
    rng = random.Random(1)
    rows = ["sentence\tlabel"]
    for i in range(n):
        label = i % 2
        word = "great" if label else "awful"
        rows.append(f"{' '.join(rng.choice(WORDS) for _ in range(5))} {word}\t{label}")
    path.write_text("\n".join(rows) + "\n")


MODEL = """[model]
preset = "bert-mini"
d_model = 32
n_heads = 2
n_layers = 2
d_ff = 64
"""


def test_pretrain_finetune_classify(tmp_path, capsys):
    write_docs(tmp_path / "docs")
    (tmp_path / "pre.toml").write_text(f"""task = "bert_pretrain"
out = "{tmp_path / "pre"}"
[data]
docs = "{tmp_path / "docs"}"
vocab_size = 100
max_len = 32
val_pairs = 20
{MODEL}
[train]
steps = 60
batch_size = 16
eval_every = 30
[optim]
schedule = "constant"
lr = 1e-3
label_smoothing = 0.0
""")
    assert main(["train", str(tmp_path / "pre.toml"), "--no-progress"]) == 0
    records = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "mlm_accuracy" in r]
    assert all(sorted(r) == sorted(["step", *METRICS["bert_pretrain"]]) for r in evals)
    assert "tokens_per_s" in records[0]
    assert len(evals) == 2 and 0 <= evals[-1]["nsp_accuracy"] <= 1
    # chance level is ln(100) + ln(2) = 5.3 nats; the loss must fall and end well below it
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] and evals[-1]["val_loss"] < 4.3
    assert (tmp_path / "pre" / "best" / "vocab.txt").is_file()

    write_tsv(tmp_path / "train.tsv")
    (tmp_path / "cls.toml").write_text(f"""task = "classify"
out = "{tmp_path / "cls"}"
init = "{tmp_path / "pre" / "best"}"
[data]
train = "{tmp_path / "train.tsv"}"
valid = "{tmp_path / "train.tsv"}"
max_len = 16
{MODEL}
[train]
steps = 80
batch_size = 16
eval_every = 80
best_metric = "accuracy"
[optim]
schedule = "constant"
lr = 3e-3
label_smoothing = 0.0
""")
    # a fine-tuning length beyond the checkpoint's 32 positions is refused before anything is written
    too_long = ["--set", "data.max_len=40", "--set", f"out={tmp_path / 'long'}"]
    assert main(["train", str(tmp_path / "cls.toml"), "--no-progress", *too_long]) == 2
    assert "max_len 40 is longer than" in capsys.readouterr().err and not (tmp_path / "long").exists()
    assert main(["train", str(tmp_path / "cls.toml"), "--no-progress"]) == 0
    records = [json.loads(x) for x in (tmp_path / "cls" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["accuracy"] == 1.0  # the label is in the last word: fitted exactly
    assert sorted(records[-1]) == sorted(["step", *METRICS["classify"]])
    assert json.loads(capsys.readouterr().out)["best_accuracy"] == 1.0
    # the throughput is named for what classification counts: sentences, not tokens
    assert "sentences_per_s" in records[-2] and "tokens_per_s" not in records[-2]
    assert (
        main(
            [
                "train",
                str(tmp_path / "cls.toml"),
                "--no-progress",
                "--set",
                "init=",
                "--set",
                f"out={tmp_path / 'scratch'}",
            ]
        )
        == 0
    )
    # init_weights = false: the checkpoint's shape and tokenizer with fresh weights (the baseline without
    # pre-training); true (the default) copies the pre-trained encoder
    pretrained = load(tmp_path / "pre" / "best")
    pre = {k: v for k, v in pretrained.state_dict().items() if k.startswith("encoder.")}
    for flag in (True, False):
        run = load_run_config(tmp_path / "cls.toml", [f"init_weights={str(flag).lower()}"])
        model, task = build_classify(run, LoopConfig())
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in pre.items()) == flag
        assert task.tok.vocab_size == pretrained.config.vocab_size
    # more pre-training from a checkpoint: all of a pre-trained model carries over; of a classifier, the
    # body (its pre-training heads start afresh)
    for source, keep in (("pre", lambda k: True), ("cls", lambda k: k.startswith(("embed.", "encoder.", "pooler.")))):
        run = load_run_config(tmp_path / "pre.toml", [f"init={tmp_path / source / 'best'}"])
        model, _ = build_pretrain(run, LoopConfig())
        saved = load(tmp_path / source / "best").state_dict()
        assert model.config.head == "pretraining" and model.config.d_model == pretrained.config.d_model
        assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items() if keep(k))
        assert torch.equal(model.nsp.weight, pretrained.nsp.weight) == (source == "pre")
    no_init = ["--set", "init=", "--set", "init_weights=false", "--set", f"out={tmp_path / 'x'}"]
    assert main(["train", str(tmp_path / "cls.toml"), "--no-progress", *no_init]) == 2
    assert "`init_weights` needs `init`" in capsys.readouterr().err and not (tmp_path / "x").exists()
    (tmp_path / "in.txt").write_text("the dog sat great\nthe cat ran awful\n\nred tree great\n")
    assert main(["classify", "--model", str(tmp_path / "cls" / "best"), "--input", str(tmp_path / "in.txt")]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert "note" not in captured.err  # no sentence was cut
    assert [line.split("\t")[0] for line in out] == ["1", "0", "", "1"]  # the blank line stays blank
    assert all(0.5 <= float(line.split("\t")[1]) <= 1.0 for line in out if line)
    # a sentence longer than the model's positions is labelled from its beginning, and stderr says which
    (tmp_path / "long.txt").write_text("the dog sat great\n\n" + "red " * 40 + "awful\n")
    assert main(["classify", "--model", str(tmp_path / "cls" / "best"), "--input", str(tmp_path / "long.txt")]) == 0
    cut_note = capsys.readouterr().err
    assert f"long.txt:3 longer than the model's {load(tmp_path / 'cls' / 'best').config.max_len - 2} tokens" in cut_note
    # batches of similar length, then back in order: what each sentence gets alone
    from qkv.commands.classify import predict
    from qkv.data.wordpiece import WordPieceTokenizer

    model, tok = load(tmp_path / "cls" / "best").eval(), WordPieceTokenizer.load(tmp_path / "cls" / "best")
    varied = ["red tree great", "the dog sat on the red mat awful and then great", "awful", "the cat ran awful"]
    together, alone = predict(model, tok, varied, 2), [predict(model, tok, [s], 1)[0] for s in varied]
    assert [label for label, _ in together] == [label for label, _ in alone]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(together, alone))
    # --eval: the accuracy the training loop reported for the same file
    assert main(["classify", "--model", str(tmp_path / "cls" / "best"), "--eval", str(tmp_path / "train.tsv")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["accuracy"] == records[-1]["accuracy"] and set(scored["accuracy_per_label"]) == {"0", "1"}
    (tmp_path / "three.tsv").write_text("sentence\tlabel\nthe dog\t2\n")
    assert main(["classify", "--model", str(tmp_path / "cls" / "best"), "--eval", str(tmp_path / "three.tsv")]) == 2
    assert "three.tsv: has label 2, the model only 0 to 1" in capsys.readouterr().err
    # a pre-trained BERT given to classify: say what it is and how to make a classifier of it
    assert main(["classify", "--model", str(tmp_path / "pre" / "best"), "--input", str(tmp_path / "in.txt")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "is a BERT with the pretraining head, not a sequence classifier (fine-tune it first: "
            f"qkv train configs/sst2.toml --set init={tmp_path / 'pre' / 'best'})"
        )
    )

    # the attention plot of a BERT: one grid, bidirectional, over [CLS] text [SEP]
    plots = tmp_path / "plots"
    assert (
        main(["plot", "attention", "--model", str(tmp_path / "pre" / "best"), "--text", "the dog", "--out", str(plots)])
        == 0
    )
    assert (plots / "self_attention.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    "train, message",
    [
        (
            "sentence\tlabel\ngood film\t1\nno label here\n",
            "t.tsv:3: expected 2 tab-separated fields with an integer label",
        ),
        ("sentence\tlabel\n", "t.tsv: no sentences after the header"),
        # labels 0 and 1 in the dev file, only 1 in training: class 0 could never be learnt
        ("sentence\tlabel\ngood film\t1\nfine film\t1\n", "t.tsv: label(s) [0] never occur in the training data"),
    ],
    ids=["field missing", "header only", "class missing"],
)
def test_bad_tsv_is_one_line_exit_2(tmp_path, capsys, train, message):
    (tmp_path / "t.tsv").write_text(train)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n")
    (tmp_path / "c.toml").write_text(f"""task = "classify"
out = "{tmp_path / "o"}"
[data]
train = "{tmp_path / "t.tsv"}"
valid = "{tmp_path / "dev.tsv"}"
{MODEL}""")
    assert main(["train", str(tmp_path / "c.toml"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
