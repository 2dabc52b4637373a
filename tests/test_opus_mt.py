"""Importing an opus-mt style Marian checkpoint (SentencePiece tokenizers, its own id order, SiLU, an
output bias): the same tokens as `transformers`' MarianTokenizer, the same logits and the same greedy
translation as MarianMTModel, on a random tiny model with SentencePiece models trained here."""

import io
import json
import random
import shutil

import pytest
import torch

from qkv.checkpoint import load
from qkv.cli import main
from qkv.convert.opus_mt import reorder
from qkv.data.padding import pad_sequences
from qkv.data.sentencepiece import read_spm
from qkv.data.subword import PairTokenizer
from qkv.decoding.translate import translate_ids

spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

DE = "der die das Hund Katze läuft schnell über Straße Mann Frau Kind spielt im Park großen roten Ball".split()
EN = "the a dog cat runs fast across street man woman child plays in park big red ball".split()


def sentences(words, rng, n=300):
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) + rng.choice([".", "!", ""]) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def opus_dir(tmp_path_factory):
    """What an opus-mt directory holds: two unigram .spm files, one vocab.json (</s> = 0, <unk> = 1,
    <pad> last, as Marian's converter writes it) and a MarianMTModel with SiLU and an output bias."""
    d = tmp_path_factory.mktemp("opus")
    rng = random.Random(0)
    pieces = []
    for name, words in (("source", DE), ("target", EN)):
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences(words, rng)),
            model_writer=model,
            vocab_size=60,
            hard_vocab_limit=False,
            model_type="unigram",
            character_coverage=1.0,
            minloglevel=2,
        )
        (d / f"{name}.spm").write_bytes(model.getvalue())
        sp = spm.SentencePieceProcessor(model_file=str(d / f"{name}.spm"))
        pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1}
    for p in pieces:
        if p not in vocab and p != "<s>":  # both models hold </s>, <unk> and <s>; Marian keeps no <s>
            vocab[p] = len(vocab)
    vocab["<pad>"] = v = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    torch.manual_seed(0)
    cfg = transformers.MarianConfig(
        vocab_size=v + 1, decoder_vocab_size=v + 1, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        activation_function="swish", scale_embedding=True, pad_token_id=v, eos_token_id=0,
        decoder_start_token_id=v, max_position_embeddings=128, dropout=0.0,
    )  # fmt: skip
    hf = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():
        hf.model.shared.weight[v] = 0  # Marian's converter adds <pad> as a zero row
        hf.final_logits_bias.normal_()
    hf.save_pretrained(d)
    return d


def test_opus_mt_tokens_logits_and_translations(opus_dir, tmp_path):
    assert main(["convert", "--from-hf", str(opus_dir), "--out", str(tmp_path / "q")]) == 0
    ours, tok = load(tmp_path / "q").eval(), PairTokenizer.load(tmp_path / "q")
    vocab = json.loads((opus_dir / "vocab.json").read_text())
    _, marian_id = reorder(vocab, len(vocab) - 1, 0, 1)  # qkv id -> Marian id
    ref = transformers.MarianTokenizer(
        source_spm=str(opus_dir / "source.spm"),
        target_spm=str(opus_dir / "target.spm"),
        vocab=str(opus_dir / "vocab.json"),
    )
    hf = transformers.MarianMTModel.from_pretrained(opus_dir).eval()
    rng = random.Random(1)
    # capitals, full-width letters and a ligature: NFKC and characters only one side's model knows
    texts = ["Der Hund läuft über die Straße!", "  die   Katze spielt ", "Ｐａｒｋ ﬁ width"] + sentences(
        DE + EN, rng, 200
    )
    src = [ids + [ours.config.eos_id] for ids in tok.encode_src(texts)]
    assert [[marian_id[i] for i in ids] for ids in src] == ref(texts).input_ids
    targets = sentences(EN, rng, 50)
    assert [[marian_id[i] for i in ids] for ids in tok.encode_tgt(targets)] == [
        x[:-1] for x in ref(text_target=targets).input_ids
    ]

    batch = ref(texts[:8], return_tensors="pt", padding=True)
    tgt = [[ours.config.bos_id] + ids for ids in tok.encode_tgt(targets[:8])]
    with torch.no_grad():
        theirs = hf(**batch, decoder_input_ids=pad_sequences([[marian_id[i] for i in x] for x in tgt], 0)).logits
        logits = ours(pad_sequences(src[:8], ours.config.pad_id), pad_sequences(tgt, ours.config.pad_id))
    for row in range(len(tgt)):  # the positions each target fills; Marian's ids as qkv orders them
        n = len(tgt[row])
        torch.testing.assert_close(logits[row, :n, 2:], theirs[row, :n][:, marian_id[2:]], atol=1e-4, rtol=1e-4)
    # <pad> and <s> are never an output (transformers forbids <pad> with bad_words_ids)
    assert logits[..., :2].max() < -1e3

    out = translate_ids(ours, tok.encode_src(texts[:8]), beam=1, max_extra=12)
    with torch.no_grad():
        gen = hf.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=40, bad_words_ids=[[len(vocab) - 1]])
    assert sum(map(len, out)) > 8 * 5  # something to compare
    for mine, row, ids in zip(out, gen.tolist(), src[:8]):
        row = row[1:]
        row = row[: row.index(0)] if 0 in row else row
        n = min(len(mine), len(row), len(ids) + 12)  # qkv stops at the source length + 12 + 1
        assert [marian_id[i] for i in mine[:n]] == row[:n]
    assert tok.decode_tgt(out) == [
        t.strip() for t in ref.batch_decode([[marian_id[i] for i in x] for x in out], skip_special_tokens=True)
    ]


@pytest.mark.parametrize("damage", ["truncated", "charsmap", "not_protobuf", "bpe", "separate_vocabs"])
def test_a_damaged_or_unsupported_opus_mt_file_is_one_line_exit_2(opus_dir, tmp_path, capsys, damage):
    d = tmp_path / "opus"
    shutil.copytree(opus_dir, d)
    data = (d / "source.spm").read_bytes()
    if damage == "truncated":  # cut inside a piece: a length that runs past the end
        (d / "source.spm").write_bytes(data[: len(data) // 2])
        expected = "source.spm: not a SentencePiece model"
    elif damage == "charsmap":  # the normaliser map's first field (its trie's size) beyond the map
        at = data.index(read_spm(d / "source.spm").charsmap)
        (d / "source.spm").write_bytes(data[:at] + b"\xff\xff\xff\x7f" + data[at + 4 :])
        expected = "source.spm: not a SentencePiece model (its normaliser map"
    elif damage == "separate_vocabs":  # the newer models' layout: a vocabulary for each side
        (d / "target_vocab.json").write_text((d / "vocab.json").read_text())
        expected = "opus: separate source and target vocabularies (target_vocab.json, decoder_vocab_size)"
    elif damage == "not_protobuf":
        (d / "source.spm").write_text("<html>404 Not Found</html>\n")
        expected = "source.spm: not a SentencePiece model"
    else:
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences(DE, random.Random(2))),
            model_writer=model,
            vocab_size=40,
            hard_vocab_limit=False,
            model_type="bpe",
            minloglevel=2,
        )
        (d / "source.spm").write_bytes(model.getvalue())
        expected = "source.spm: a SentencePiece model of type 2; only unigram models (opus-mt's) are read"
    out = tmp_path / "q"
    assert main(["convert", "--from-hf", str(d), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
