"""BERT training tasks: pre-training (masked LM + next sentence) on documents, and sentence
classification (SST-2 style TSV) from scratch or from a pre-trained checkpoint (`init = DIR`)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from qkv.config import Config, ConfigError, require
from qkv.data.bert_pretraining import IGNORE, SentencePair, hold_out_documents, mask_tokens, nsp_pairs, pack
from qkv.data.padding import pad_sequences
from qkv.data.text import DataError, read_text, text_files_in
from qkv.data.wordpiece import WordPieceTokenizer
from qkv.models.bert import PRESETS, Bert
from qkv.tasks.common import GeneratorPosition, info, timed, to_model
from qkv.tasks.init import fine_tune_config, pretrained, saved_tokenizer, start_from
from qkv.train import distributed
from qkv.train.distributed import Ranks
from qkv.train.loop import LoopConfig
from qkv.train.runconfig import model_config, section_config, where

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PretrainDataConfig(Config):
    # a directory of .txt files (one document each), or one file whose documents are separated by two blank lines
    docs: str = "../shared/data/books"
    max_docs: int = 0  # read only the first N documents (0 = all)
    vocab_size: int = 8000
    max_len: int = 128
    mask_prob: float = 0.15
    val_pairs: int = 1000  # for validation loss and MLM/NSP accuracy, from documents set aside whole

    def validate(self) -> None:
        require(self.max_len >= 8, "data.max_len must be at least 8", key="max_len")
        require(0 < self.mask_prob < 1, "data.mask_prob must be in (0, 1)", key="mask_prob")
        require(self.val_pairs >= 1, "data.val_pairs must be at least 1", key="val_pairs")
        require(self.max_docs >= 0, "data.max_docs must be at least 0 (0 reads them all)", key="max_docs")
        require(self.vocab_size >= 16, "data.vocab_size must be at least 16", key="vocab_size")


def read_documents(cfg: PretrainDataConfig) -> list[list[str]]:
    """Documents as lists of sentences (paragraphs split after . ! ?)."""
    root = Path(cfg.docs)
    if root.is_dir():
        texts = [read_text(f) for f in text_files_in(root)[: cfg.max_docs or None]]
    else:
        texts = re.split(r"\n\s*\n\s*\n", read_text(root))[: cfg.max_docs or None]
    docs = []
    for text in texts:
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
        docs.append([s for p in paragraphs if p for s in _SENTENCE_END.split(p) if s])
    return docs


def packed(pair: SentencePair, tok: WordPieceTokenizer) -> tuple[list[int], list[int], int]:
    """(ids, segment ids, NSP label: 0 IsNext, 1 NotNext) of one pair."""
    return (*pack(pair, tok.cls_id, tok.sep_id), 0 if pair.is_next else 1)


class PretrainTask(GeneratorPosition):
    """Batches run through one pass of next-sentence pairs in a shuffled order; each pass draws new
    pairs from the training documents, and each batch new masks (`self.generator`)."""

    unit = "tokens"  # what `loss` counts

    def __init__(
        self, cfg: PretrainDataConfig, loop: LoopConfig, tok: WordPieceTokenizer, docs, val, seed: int
    ) -> None:
        """docs: the training documents as sentences of ids; val: held-out (ids, segments, label) triples."""
        self.cfg, self.loop, self.tok, self.docs, self.val = cfg, loop, tok, docs, val
        self.generator = torch.Generator().manual_seed(seed)
        self.seed, self.rank, self.pass_, self.next = seed, 0, 0, 0
        self._pairs, self._pairs_of = [], None  # the pairs, and the (rank, pass) they were drawn for

    @property
    def pairs(self) -> list[tuple[list[int], list[int], int]]:
        """This rank's pairs for pass `self.pass_`, packed and shuffled; drawn (about 3 s on the books)
        only when the rank or pass changes, so sharding and resuming do not draw them again."""
        if self._pairs_of != (self.rank, self.pass_):
            rng = random.Random(f"pairs/{self.seed}/{self.rank}/{self.pass_}")  # str seeds hash alike everywhere
            self._pairs = [packed(p, self.tok) for p in nsp_pairs(self.docs, self.cfg.max_len, rng)]
            rng.shuffle(self._pairs)
            self._pairs_of = (self.rank, self.pass_)
        return self._pairs

    def _batch(self, pairs, generator):
        tokens = pad_sequences([p[0] for p in pairs], self.tok.pad_id)
        segments = pad_sequences([p[1] for p in pairs], 0)
        maskable = torch.ones_like(tokens, dtype=torch.bool)
        for special in self.tok.special_ids:
            maskable &= tokens != special
        inputs, labels = mask_tokens(
            tokens, maskable, self.tok.mask_id, (5, self.tok.vocab_size), generator, self.cfg.mask_prob
        )
        return inputs, segments, labels, torch.tensor([p[2] for p in pairs])

    def train_batch(self):
        if self.next + self.loop.batch_size > len(self.pairs):  # this pass is used up: pair afresh
            self.pass_, self.next = self.pass_ + 1, 0
        batch = self.pairs[self.next : self.next + self.loop.batch_size]
        self.next += self.loop.batch_size
        return self._batch(batch, self.generator)

    def shard(self, rank: int, world: int) -> None:
        """Each rank pairs and masks with its own seeds (rank 0 keeps the single-process stream)."""
        super().shard(rank, world)
        self.rank = rank

    def state_dict(self):
        tensors, _ = super().state_dict()
        return tensors, {"pass": self.pass_, "next": self.next}

    def load_state_dict(self, tensors, extra) -> None:
        super().load_state_dict(tensors, extra)
        self.pass_, self.next = extra.get("pass", 0), extra.get("next", 0)

    def _losses(self, model, batch):
        inputs, segments, labels, nsp = to_model(batch, model)
        predict = labels != IGNORE
        out = model(inputs, segments, predict=predict)  # logits (N, V) at the N masked positions only
        targets = labels[predict]
        # a batch with nothing masked (possible only for tiny inputs) has no masked-LM term
        mlm = F.cross_entropy(out.logits, targets) if targets.numel() else out.logits.sum() * 0
        return out, mlm, F.cross_entropy(out.nsp_logits, nsp)

    def loss(self, model, batch):
        _, mlm, nsp = self._losses(model, batch)
        n = int((batch[0] != self.tok.pad_id).sum())  # real tokens, so the progress bar shows tokens/s
        return (mlm + nsp) * n, n

    @torch.inference_mode()
    def evaluate(self, model, ranks: Ranks = Ranks()) -> dict[str, float]:
        """Loss, masked-LM and next-sentence accuracy on the held-out pairs (each rank its share of the
        batches, the sums reduced). Batch i's masks come from seed 1234 + i: the same at every evaluation."""
        model.eval()
        totals = {"loss": 0.0, "mlm_hit": 0, "mlm_n": 0, "nsp_hit": 0, "pairs": 0, "batches": 0}
        starts = range(0, len(self.val), 64)
        for i in distributed.share(len(starts), ranks):
            batch = to_model(
                self._batch(self.val[starts[i] : starts[i] + 64], torch.Generator().manual_seed(1234 + i)), model
            )
            out, mlm, nsp = self._losses(model, batch)
            targets = batch[2][batch[2] != IGNORE]
            totals["loss"] += (mlm + nsp).item()
            totals["mlm_hit"] += int((out.logits.argmax(-1) == targets).sum())
            totals["mlm_n"] += targets.numel()
            totals["nsp_hit"] += int((out.nsp_logits.argmax(-1) == batch[3]).sum())
            totals["pairs"] += batch[3].numel()
            totals["batches"] += 1
        t = distributed.sums(totals, ranks)
        return {
            "val_loss": t["loss"] / t["batches"],
            "mlm_accuracy": t["mlm_hit"] / t["mlm_n"],
            "nsp_accuracy": t["nsp_hit"] / t["pairs"],
        }

    def save_extras(self, directory: Path) -> None:
        self.tok.save(directory)


def build_pretrain(run: dict, loop: LoopConfig):
    cfg = section_config(run, "data", PretrainDataConfig)
    docs = read_documents(cfg)
    source = pretrained(run, "bert")  # more pre-training: its shape and tokenizer
    _check_positions(run, cfg.max_len, source)
    if saved_tokenizer(run):
        tok = WordPieceTokenizer.load(saved_tokenizer(run))
    else:
        with timed(f"tokenizer: training WordPiece ({cfg.vocab_size:,} tokens) on {len(docs):,} documents"):
            tok = WordPieceTokenizer.train((s for d in docs for s in d), cfg.vocab_size)
    sentences = tok.encode_batch([s for d in docs for s in d])
    it = iter(sentences)
    encoded = [[next(it) for _ in d] for d in docs]
    try:
        train_docs, val = hold_out_documents(encoded, cfg.val_pairs, cfg.max_len, random.Random(loop.seed))
    except ValueError as e:
        raise DataError(f"{cfg.docs}: {e}") from None
    task = PretrainTask(cfg, loop, tok, train_docs, [packed(p, tok) for p in val], loop.seed)
    held = sum(map(bool, encoded)) - len(train_docs)  # non-empty documents set aside
    info(
        f"pre-training: {len(task.pairs):,} sentence pairs per pass from {len(train_docs)} documents, drawn"
        f" afresh each pass; {len(val):,} held-out pairs from {held} other documents"
    )
    if source is not None:
        model_cfg = fine_tune_config(run, source.config, head="pretraining")
    else:
        model_cfg = model_config(
            PRESETS, run, vocab_size=tok.vocab_size, max_len=cfg.max_len, head="pretraining", pad_id=tok.pad_id
        )
    torch.manual_seed(loop.seed)
    model = Bert(model_cfg)
    if source is not None:  # the whole model, or the body of a classifier (the pre-training heads start afresh)
        start_from(
            model,
            source.state_dict(),
            run,
            keep=lambda name: source.config.head == "pretraining" or name.startswith(BODY),
        )
    return model, task


@dataclass(frozen=True)
class ClassifyDataConfig(Config):
    train: str = "../shared/data/sst2/train.tsv"  # TSV with a header; columns `sentence` and `label`
    valid: str = "../shared/data/sst2/dev.tsv"
    vocab_size: int = 8000  # for a tokenizer trained here (from scratch); with `init` the checkpoint's is used
    max_len: int = 64  # at most a pre-trained checkpoint's positions when fine-tuning one

    def validate(self) -> None:
        require(self.max_len >= 3, "data.max_len must be at least 3 ([CLS], a token, [SEP])", key="max_len")
        require(self.vocab_size >= 16, "data.vocab_size must be at least 16", key="vocab_size")


def read_tsv(path: str) -> tuple[list[str], list[int]]:
    """(sentences, integer labels) from a TSV whose header names `sentence` and `label`."""
    lines = read_text(path).splitlines()
    header = lines[0].split("\t")
    if "sentence" not in header or "label" not in header:
        raise DataError(f"{path}:1: header must name the columns `sentence` and `label`, got {header}")
    si, li = header.index("sentence"), header.index("label")
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != len(header) or not fields[li].strip().lstrip("-").isdigit():
            raise DataError(f"{path}:{number}: expected {len(header)} tab-separated fields with an integer label")
        sentences.append(fields[si])
        labels.append(int(fields[li]))
    if not labels:
        raise DataError(f"{path}: no sentences after the header")
    if min(labels) < 0:
        raise DataError(f"{path}: labels must be 0, 1, ...")
    return sentences, labels


class ClassifyTask(GeneratorPosition):
    unit = "sentences"  # what `loss` counts

    def __init__(self, cfg: ClassifyDataConfig, loop: LoopConfig, tok: WordPieceTokenizer, train, valid, seed):
        self.cfg, self.loop, self.tok = cfg, loop, tok
        self.train = self._encode(*train)
        # validation sums over every sentence, so its batches can hold sentences of similar length
        # (half the slots of SST-2 dev batches in file order are padding: `qkv classify` does the same)
        self.valid = sorted(self._encode(*valid), key=lambda item: len(item[0]))
        self.generator = torch.Generator().manual_seed(seed)

    def _encode(self, sentences, labels):
        ids = self.tok.encode_batch(sentences)
        return [([self.tok.cls_id, *x[: self.cfg.max_len - 2], self.tok.sep_id], y) for x, y in zip(ids, labels)]

    def _batch(self, items):
        return pad_sequences([x for x, _ in items], self.tok.pad_id), torch.tensor([y for _, y in items])

    def train_batch(self):
        index = torch.randint(len(self.train), (self.loop.batch_size,), generator=self.generator).tolist()
        return self._batch([self.train[i] for i in index])

    def loss(self, model, batch):
        tokens, labels = to_model(batch, model)
        return F.cross_entropy(model(tokens).logits, labels, reduction="sum"), labels.numel()

    @torch.inference_mode()
    def evaluate(self, model, ranks: Ranks = Ranks()) -> dict[str, float]:
        model.eval()
        loss = hits = 0.0
        starts = range(0, len(self.valid), 128)
        for i in distributed.share(len(starts), ranks):  # each rank its share; the sums are reduced
            tokens, labels = to_model(self._batch(self.valid[starts[i] : starts[i] + 128]), model)
            logits = model(tokens).logits
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            hits += int((logits.argmax(-1) == labels).sum())
        s = distributed.sums({"loss": loss, "hits": hits}, ranks)
        return {"val_loss": s["loss"] / len(self.valid), "accuracy": s["hits"] / len(self.valid)}

    def save_extras(self, directory: Path) -> None:
        self.tok.save(directory)


BODY = ("embed.", "encoder.", "pooler.")  # what a BERT checkpoint passes on to a model with another head


def _check_positions(run: dict, max_len: int, source: Bert | None) -> None:
    if source is not None and max_len > source.config.max_len:
        raise ConfigError(
            f"{where(run, 'data', 'max_len')}: max_len {max_len} is longer than {run['init']}'s "
            f"{source.config.max_len} positions; set data.max_len <= {source.config.max_len}"
        )


def build_classify(run: dict, loop: LoopConfig):
    """From scratch, or with `init = DIR` from a BERT checkpoint (its encoder, embeddings and pooler).
    `init_weights = false` keeps that checkpoint's shape and tokenizer but not its weights: the same
    model without pre-training, the baseline that isolates what pre-training gave."""
    cfg = section_config(run, "data", ClassifyDataConfig)
    train, valid = read_tsv(cfg.train), read_tsv(cfg.valid)
    n_labels = max(train[1] + valid[1]) + 1
    unseen = sorted(set(range(n_labels)) - set(train[1]))
    if unseen:  # a class the classifier could never learn: a mislabelled or truncated training file
        raise DataError(
            f"{cfg.train}: label(s) {unseen} never occur in the training data (labels are 0 to {n_labels - 1})"
        )
    torch.manual_seed(loop.seed)
    source = pretrained(run, "bert")
    _check_positions(run, cfg.max_len, source)
    if saved_tokenizer(run):
        tok = WordPieceTokenizer.load(saved_tokenizer(run))
    else:
        with timed(f"tokenizer: training WordPiece ({cfg.vocab_size:,} tokens) on {len(train[0]):,} sentences"):
            tok = WordPieceTokenizer.train(train[0], cfg.vocab_size)
    if source is not None:
        model_cfg = fine_tune_config(run, source.config, head="sequence_classification", n_labels=n_labels)
        model = Bert(model_cfg)
        start_from(model, source.state_dict(), run, keep=lambda name: name.startswith(BODY))  # a new classifier head
    else:
        model_cfg = model_config(
            PRESETS,
            run,
            vocab_size=tok.vocab_size,
            head="sequence_classification",
            n_labels=n_labels,
            pad_id=tok.pad_id,
            max_len=max(cfg.max_len, 8),
        )
        model = Bert(model_cfg)
    return model, ClassifyTask(cfg, loop, tok, train, valid, loop.seed)
