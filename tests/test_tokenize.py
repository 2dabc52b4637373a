"""`qkv tokenize` shows the tokens each family's saved tokenizer makes of a text."""

import pytest

import qkv
from qkv.cli import main
from qkv.data.subword import PairTokenizer
from qkv.data.tokenizers import BPETokenizer, CharTokenizer
from qkv.data.wordpiece import WordPieceTokenizer
from qkv.models.bert import Bert, BertConfig
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig

TEXT = "a dog runs in the park. the dog is happy. " * 20
SMALL = dict(d_model=16, n_heads=2, d_ff=32)


def run(capsys, model, text, *extra) -> list[str]:
    assert main(["tokenize", "--model", str(model), "--text", text, *extra]) == 0
    return capsys.readouterr().out.splitlines()


def test_gpt_characters_and_byte_level_bpe(tmp_path, capsys):
    chars = CharTokenizer.train(TEXT)
    qkv.save(GPT(GPTConfig(vocab_size=chars.vocab_size, block_size=8, n_layers=1, **SMALL)), tmp_path / "c")
    chars.save(tmp_path / "c")
    ids = chars.encode("a dog")
    assert run(capsys, tmp_path / "c", "a dog") == [
        "5 tokens for 5 characters",
        f"a[{ids[0]}] \u2423[{ids[1]}] d[{ids[2]}] o[{ids[3]}] g[{ids[4]}]",
    ]
    # a character the vocabulary lacks: the model cannot read it, and the error says where it is
    assert main(["tokenize", "--model", str(tmp_path / "c"), "--text", "a dog and a ☃"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"error: --text: line 1, column 13: character '☃' is not in the {chars.vocab_size}-character vocabulary"
        )
    )
    (tmp_path / "t.txt").write_text(TEXT)
    bpe = BPETokenizer.train([str(tmp_path / "t.txt")], vocab_size=300)
    qkv.save(GPT(GPTConfig(vocab_size=bpe.vocab_size, block_size=8, n_layers=1, **SMALL)), tmp_path / "b")
    bpe.save(tmp_path / "b")
    count, line = run(capsys, tmp_path / "b", "the dog ☃")
    ids = bpe.encode("the dog ☃")
    assert count == f"{len(ids)} tokens for 9 characters" and len(ids) < 9  # merges made some tokens longer
    assert line.split() == [f"{bpe.decode([i]).replace(' ', chr(0x2423))}[{i}]" for i in ids]


def test_bert_wordpiece_and_translation_bpe_sides(tmp_path, capsys):
    wp = WordPieceTokenizer.train(TEXT.split(". "), vocab_size=60)
    qkv.save(Bert(BertConfig(vocab_size=wp.vocab_size, max_len=16, n_layers=1, **SMALL)), tmp_path / "bert")
    wp.save(tmp_path / "bert")
    enc = wp.tok.encode("the dog runs", add_special_tokens=False)
    expected = " ".join(f"{t}[{i}]" for t, i in zip(enc.tokens, enc.ids))
    assert run(capsys, tmp_path / "bert", "the dog runs")[1] == expected
    assert main(["tokenize", "--model", str(tmp_path / "bert"), "--text", "a", "--side", "target"]) == 2
    assert capsys.readouterr().err.strip() == (
        "qkv tokenize: error: --side target: a bert model has one tokenizer (--side chooses an encoder-decoder's)"
    )
    pair = PairTokenizer.train(["ein Hund läuft"] * 20, ["a dog runs"] * 20, vocab_size=40, shared=False)
    sizes = pair.src.get_vocab_size(), pair.tgt.get_vocab_size()
    cfg = Seq2SeqConfig(*sizes, n_encoder_layers=1, n_decoder_layers=1, share_embeddings=False, **SMALL)
    qkv.save(EncoderDecoder(cfg), tmp_path / "mt")
    pair.save(tmp_path / "mt")
    for side, text, tok in [("source", "ein Hund", pair.src), ("target", "a dog", pair.tgt)]:
        enc = tok.encode(text)
        assert run(capsys, tmp_path / "mt", text, "--side", side)[1] == " ".join(
            f"{t.replace(' ', chr(0x2423))}[{i}]" for t, i in zip(enc.tokens, enc.ids)
        )


def test_the_demo_word_vocabulary_shows_unknown_words(tmp_path, capsys):
    from qkv.data.vocab import Vocab

    vocab = Vocab(["twenty", "third", "of", "march"])
    cfg = Seq2SeqConfig(len(vocab), len(vocab), n_encoder_layers=1, n_decoder_layers=1, **SMALL)
    qkv.save(EncoderDecoder(cfg), tmp_path)
    vocab.save(tmp_path / "vocab.json")
    assert run(capsys, tmp_path, "twenty-third of March") == [
        "4 tokens for 21 characters",
        "twenty[4] third[5] of[6] <unk>[3]",  # the words the demo reads; "March" is not one of them
    ]


def test_empty_text_is_refused(tmp_path, capsys):
    assert main(["tokenize", "--model", str(tmp_path), "--text", ""]) == 2
    assert "--text is empty" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["missing"])
def test_a_directory_without_a_checkpoint_is_one_line(tmp_path, capsys, model):
    assert main(["tokenize", "--model", str(tmp_path / model), "--text", "a"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
