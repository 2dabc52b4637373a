"""BERT: parity with Hugging Face (pre-training and classification), padding, shared blocks."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from qkv.checkpoint import load
from qkv.cli import main
from qkv.models.bert import Bert, BertConfig
from qkv.nn.block import TransformerBlock

transformers = pytest.importorskip("transformers")


def hf_config(**extra):
    return transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        **extra,
    )


def inputs():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(5, 99, (3, 12), generator=g)
    segments = torch.zeros_like(tokens)
    segments[:, 6:] = 1  # two segments
    mask = torch.ones_like(tokens)
    tokens[1, 9:], mask[1, 9:] = 0, 0  # padding
    tokens[2, 4:], mask[2, 4:] = 0, 0
    return tokens, segments, mask


@pytest.mark.parametrize(
    "arch", ["BertForPreTraining", "BertForMaskedLM", "bert-base-uncased", "BertForSequenceClassification"]
)
def test_hf_bert_parity_and_round_trip(tmp_path, capsys, arch):
    """ "bert-base-uncased": pre-training weights under a config that says BertForMaskedLM, as that
    checkpoint and most BERTs have; a BertForMaskedLM's own save has no pooler and no NSP head."""
    torch.manual_seed(0)
    hf = getattr(transformers, "BertForPreTraining" if arch == "bert-base-uncased" else arch)(hf_config(num_labels=3))
    hf.eval().save_pretrained(tmp_path / "hf")
    if arch == "bert-base-uncased":  # and LayerNorm scales and shifts named as the TensorFlow original named them
        config = json.loads((tmp_path / "hf" / "config.json").read_text())
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
        weights = load_file(tmp_path / "hf" / "model.safetensors")
        old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in weights.items()}  # fmt: skip
        assert sum(k.endswith("LayerNorm.gamma") for k in old) == 2 * 2 + 2  # 2 a layer, embeddings, MLM head
        save_file(old, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "qkv")]) == 0
    assert ("no pooler or next-sentence head" in capsys.readouterr().err) == (arch == "BertForMaskedLM")
    ours = load(tmp_path / "qkv")
    assert all(type(layer) is TransformerBlock for layer in ours.encoder.layers)
    tokens, segments, mask = inputs()
    with torch.no_grad():
        ref = hf(input_ids=tokens, token_type_ids=segments, attention_mask=mask)
        got = ours(tokens, segments)
    if arch == "BertForSequenceClassification":
        assert got.logits.shape == (3, 3) and (got.logits - ref.logits).abs().max() <= 1e-4
    elif arch == "BertForMaskedLM":
        assert (got.logits - ref.logits).abs().max() <= 1e-4
    else:
        assert (got.logits - ref.prediction_logits).abs().max() <= 1e-4
        assert (got.nsp_logits - ref.seq_relationship_logits).abs().max() <= 1e-4
    assert main(["convert", "--to-hf", str(tmp_path / "qkv"), "--out", str(tmp_path / "back")]) == 0
    back_arch = arch if arch.startswith("BertForSeq") else "BertForPreTraining"  # what qkv writes
    back = getattr(transformers, back_arch).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        again = back(input_ids=tokens, token_type_ids=segments, attention_mask=mask)
    first = again.logits if arch.startswith("BertForSeq") else again.prediction_logits
    assert (first - got.logits).abs().max() <= 1e-4
    if got.nsp_logits is not None:
        assert (again.seq_relationship_logits - got.nsp_logits).abs().max() <= 1e-4


@pytest.mark.parametrize(
    "extra, problem",
    [
        ({"num_labels": 1}, "regression"),
        ({"num_labels": 3, "problem_type": "multi_label_classification"}, "multi_label"),
    ],
)
def test_a_classifier_that_is_not_single_label_is_refused(tmp_path, capsys, extra, problem):
    """qkv classify takes the softmax's best label: a regression head (STS-B) or independent sigmoid
    labels converted as if single-label would print confident nonsense."""
    transformers.BertForSequenceClassification(hf_config(**extra)).save_pretrained(tmp_path / "hf")
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "q")]) == 2
    assert f"problem_type '{problem}" in capsys.readouterr().err
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").iterdir())


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=50, max_len=32, d_model=32, n_heads=4, n_layers=2, d_ff=64)).eval()
    tokens = torch.randint(5, 50, (1, 7))
    padded = torch.cat([tokens, torch.zeros(1, 5, dtype=torch.long)], 1)
    with torch.no_grad():
        a, b = model(tokens), model(padded)
    assert (a.logits - b.logits[:, :7]).abs().max() <= 1e-5
    assert (a.nsp_logits - b.nsp_logits).abs().max() <= 1e-5


def test_masked_lm_logits_at_selected_positions_only():
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=50, max_len=32, d_model=32, n_heads=4, n_layers=2, d_ff=64)).eval()
    tokens = torch.randint(5, 50, (2, 9))
    predict = torch.rand(2, 9) < 0.3
    with torch.no_grad():
        full, some = model(tokens).logits, model(tokens, predict=predict).logits
    assert some.shape == (int(predict.sum()), 50) and (some - full[predict]).abs().max() <= 1e-6


@pytest.mark.parametrize("head, shape", [("token_classification", (2, 6, 5)), ("question_answering", (2, 6, 2))])
def test_fine_tuning_heads(head, shape):
    model = Bert(
        BertConfig(vocab_size=50, max_len=32, d_model=32, n_heads=4, n_layers=1, d_ff=64, head=head, n_labels=5)
    )
    assert model(torch.randint(5, 50, (2, 6))).logits.shape == shape


def test_masking_fractions_and_labels():
    from qkv.data.bert_pretraining import IGNORE, mask_tokens

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 128), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] / [SEP]
    maskable[:, 100:] = False  # padding
    inputs, labels = mask_tokens(ids, maskable, mask_id=4, random_ids=(10, 1000), generator=g)
    selected = labels != IGNORE
    n = int(maskable.sum())
    frac = selected.sum().item() / n
    assert abs(frac - 0.15) < 3 * (0.15 * 0.85 / n) ** 0.5 + 1e-9  # within 3 standard deviations
    assert not selected[~maskable].any() and torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    k = int(selected.sum())
    as_mask = (inputs[selected] == 4).float().mean().item()
    changed = ((inputs[selected] != 4) & (inputs[selected] != ids[selected])).float().mean().item()
    sd = (0.1 * 0.9 / k) ** 0.5
    assert abs(as_mask - 0.8) < 4 * (0.16 / k) ** 0.5
    assert abs(changed - 0.1 * (1 - 1 / 990)) < 4 * sd  # a random token can equal the original (1 in 990)


def test_nsp_pairs_are_half_real_and_real_ones_follow():
    import random

    from qkv.data.bert_pretraining import nsp_pairs, pack

    rng = random.Random(0)
    docs = [
        [[10 + d * 1000 + s * 10 + t for t in range(rng.randint(3, 9))] for s in range(rng.randint(2, 30))]
        for d in range(200)
    ]
    pairs = nsp_pairs(docs, max_len=64, rng=random.Random(1))
    real = [p for p in pairs if p.is_next]
    assert len(pairs) > 250 and abs(len(real) / len(pairs) - 0.5) < 0.08  # 3 standard deviations
    for p in real:
        assert p.b_doc == p.doc and p.b_first == p.a_last + 1
    for p in pairs:
        ids, segments = pack(p, cls_id=2, sep_id=3)
        assert len(ids) <= 64 and ids[0] == 2 and ids.count(3) == 2 and len(segments) == len(ids)
        assert segments[: len(p.a) + 2] == [0] * (len(p.a) + 2) and set(segments[len(p.a) + 2 :]) == {1}
    again = nsp_pairs(docs, max_len=64, rng=random.Random(1))
    assert [(p.a, p.b) for p in again] == [(p.a, p.b) for p in pairs]  # seeded: reproducible


def _numbered_docs(n_docs: int):
    """Documents whose every token says where it is: 10 + doc * 1000 + sentence * 10 + position."""
    import random

    rng = random.Random(0)
    return [
        [[10 + d * 1000 + s * 10 + t for t in range(rng.randint(3, 9))] for s in range(rng.randint(8, 30))]
        for d in range(n_docs)
    ]


def test_held_out_pairs_come_from_documents_never_trained_on():
    import random

    from qkv.data.bert_pretraining import hold_out_documents

    docs = _numbered_docs(40)
    train, val = hold_out_documents(docs, 30, max_len=64, rng=random.Random(1))
    assert len(val) == 30 and 2 <= len(docs) - len(train) < 40
    held = {p.doc for p in val} | {p.b_doc for p in val}
    trained_tokens = {t for d in train for s in d for t in s}
    for p in val:
        assert not trained_tokens & set(p.a + p.b)  # no held-out text in any training document
    assert len(held) >= 2
    with pytest.raises(ValueError, match="held-out pairs"):
        hold_out_documents(docs[:3], 10_000, max_len=64, rng=random.Random(1))


def test_each_pass_draws_new_pairs_and_uses_each_once():
    """BERT re-pairs its corpus for every copy of it; fixed pairs seen pass after pass get memorised."""
    from types import SimpleNamespace

    from qkv.tasks.bert import PretrainDataConfig, PretrainTask
    from qkv.train.loop import LoopConfig

    tok = SimpleNamespace(cls_id=2, sep_id=3, pad_id=0, mask_id=4, special_ids=(0, 1, 2, 3, 4), vocab_size=50_000)
    task = PretrainTask(PretrainDataConfig(max_len=64), LoopConfig(batch_size=8), tok, _numbered_docs(30), [], 1)
    task._batch = lambda pairs, generator: pairs  # the pairs themselves, before masking
    first = list(task.pairs)
    seen = [tuple(ids) for _ in range(len(first) // 8) for ids, _, _ in task.train_batch()]
    assert task.pass_ == 0 and len(set(seen)) == len(seen) > len(first) - 8  # one pass: each pair once
    task.train_batch()
    second = task.pairs
    assert task.pass_ == 1 and sorted(second) != sorted(first)
    for pairs in (first, second):  # each pass about half real next segments (3 standard deviations)
        assert abs(sum(label == 0 for _, _, label in pairs) / len(pairs) - 0.5) < 3 * (0.25 / len(pairs)) ** 0.5
    task.shard(1, 2)  # another rank of a multi-process run draws its own pairs for the same pass
    assert task.pass_ == 1 and sorted(task.pairs) != sorted(second)


def test_fill_mask_ranks_as_transformers_does(tmp_path, capsys):
    """`qkv fill-mask` on a converted BertForMaskedLM: the same candidates for each [MASK], with the
    same probabilities, as the transformers model and tokenizer give on the same text."""
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_config(initializer_range=0.5)).eval()  # peaked: no near-ties in the top 3
    hf.save_pretrained(tmp_path / "hf")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(94))]
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "qkv")]) == 0
    text = "w3 w17 [MASK] w5 [MASK] w9"
    capsys.readouterr()
    assert main(["fill-mask", "--model", str(tmp_path / "qkv"), "--text", text, "--top-k", "3"]) == 0
    filled, *lines = capsys.readouterr().out.splitlines()
    ids = transformers.BertTokenizerFast.from_pretrained(tmp_path / "hf")(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == [2, 8, 22, 4, 10, 4, 14, 3]  # [CLS] w3 w17 [MASK] w5 [MASK] w9 [SEP]
    with torch.no_grad():
        probs = hf(input_ids=ids).logits[0, ids[0] == 4].softmax(-1)  # (2 masks, V)
    top = probs.topk(3)
    assert len(lines) == 2
    for n, (line, p, i) in enumerate(zip(lines, top.values, top.indices), 1):
        label, shown = line.split(": ")
        pairs = [c.split(" ") for c in shown.split(", ")]
        assert label == f"[MASK] {n}" and [t for t, _ in pairs] == [vocab[j] for j in i]
        assert all(abs(float(q) - float(r)) <= 1e-3 for (_, q), r in zip(pairs, p))
    assert filled.split() == ["w3", "w17", vocab[top.indices[0, 0]], "w5", vocab[top.indices[1, 0]], "w9"]

    def refused(*args) -> str:
        assert main(["fill-mask", "--model", str(tmp_path / "qkv"), *args]) == 2
        return capsys.readouterr().err.strip()

    assert refused("--text", "w3 w4").endswith("--text has no [MASK]: write [MASK] where a word is to be predicted")
    assert "more than the model's 38" in refused("--text", "[MASK] " + "w1 " * 40)
    hf_cls = transformers.BertForSequenceClassification(hf_config(num_labels=2))
    hf_cls.save_pretrained(tmp_path / "hf_cls")
    assert main(["convert", "--from-hf", str(tmp_path / "hf_cls"), "--out", str(tmp_path / "cls")]) == 0
    capsys.readouterr()
    assert main(["fill-mask", "--model", str(tmp_path / "cls"), "--text", "[MASK]"]) == 2
    assert "has no masked-LM head" in capsys.readouterr().err
