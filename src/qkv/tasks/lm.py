"""Causal language modelling for the GPT family: next-token prediction on text files."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from qkv.config import Config, require
from qkv.data.lm import LMData
from qkv.data.text import read_text, text_files_in
from qkv.data.tokenizers import BPETokenizer, CharTokenizer, TextTokenizer, TokenizerError, load_tokenizer
from qkv.models.gpt import GPT, PRESETS
from qkv.tasks.common import GeneratorPosition, timed, to_model
from qkv.tasks.init import fine_tune_config, pretrained, saved_tokenizer, start_from
from qkv.train import distributed
from qkv.train.distributed import Ranks
from qkv.train.loop import LoopConfig
from qkv.train.runconfig import model_config, note_unused, section_config


@dataclass(frozen=True)
class LMDataConfig(Config):
    files: tuple[str, ...] = ("../shared/data/tinyshakespeare/input.txt",)  # a directory: its .txt files
    tokenizer: Literal["char", "bpe", "gpt2"] = "char"
    bpe_vocab_size: int = 8000  # when tokenizer = "bpe" (trained on `files`)
    gpt2_dir: str = ""  # when tokenizer = "gpt2": a directory with GPT-2's vocab.json and merges.txt
    val_fraction: float = 0.1
    eval_batches: int = 50  # validation loss = mean over this many fixed random batches

    def validate(self) -> None:
        require(len(self.files) > 0, "data.files must name at least one file", key="files")
        require(0.0 < self.val_fraction < 1.0, "data.val_fraction must be in (0, 1)", key="val_fraction")
        require(self.eval_batches >= 1, "data.eval_batches must be at least 1", key="eval_batches")
        require(self.tokenizer != "gpt2" or bool(self.gpt2_dir), "data.gpt2_dir is needed with tokenizer = 'gpt2'")


def text_files(entries: tuple[str, ...]) -> list[str]:
    """data.files with each directory replaced by the .txt files in it, in name order."""
    files = []
    for entry in entries:
        if Path(entry).is_dir():
            files += map(str, text_files_in(Path(entry)))
        else:
            files.append(entry)
    return files


def build_tokenizer(cfg: LMDataConfig, files: list[str], text: str) -> TextTokenizer:
    if cfg.tokenizer == "char":
        return CharTokenizer.train(text)
    if cfg.tokenizer == "bpe":
        with timed(f"tokenizer: training byte-level BPE ({cfg.bpe_vocab_size:,} tokens) on {len(text):,} characters"):
            return BPETokenizer.train(files, cfg.bpe_vocab_size)
    return BPETokenizer.from_gpt2_files(Path(cfg.gpt2_dir) / "vocab.json", Path(cfg.gpt2_dir) / "merges.txt")


def token_stream(tokenizer: TextTokenizer, texts: list[str], names: list[str]) -> list[int]:
    """The files' tokens, one after another. With a BPE vocabulary each file ends in <|endoftext|>, as
    GPT-2's documents did: no token spans two files, and the model learns where a document ends
    (`qkv generate` stops there). Characters have no such token: their texts are simply joined.
    names: the files', for the error when a text has a character a saved vocabulary lacks."""
    ids: list[int] = []
    for text, name in zip(texts, names, strict=True):
        try:
            ids += tokenizer.encode(text)
        except TokenizerError as err:
            raise TokenizerError(f"{name}: {err}") from None
        if tokenizer.end_of_text is not None:
            ids.append(tokenizer.end_of_text)
    return ids


class LMTask(GeneratorPosition):
    unit = "tokens"  # what `loss` counts

    def __init__(self, data_cfg: LMDataConfig, loop: LoopConfig, tokenizer: TextTokenizer, data: LMData) -> None:
        self.cfg, self.loop, self.tokenizer, self.data = data_cfg, loop, tokenizer, data
        self.generator = torch.Generator().manual_seed(loop.seed)

    def train_batch(self):
        return self.data.batch("train", self.loop.batch_size, self.generator)

    def loss(self, model: GPT, batch) -> tuple[torch.Tensor, int]:
        x, y = to_model(batch, model)
        logits = model(x).logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"), y.numel()

    @torch.inference_mode()
    def evaluate(self, model: GPT, ranks: Ranks = Ranks()) -> dict[str, float]:
        model.eval()
        g = torch.Generator().manual_seed(1234)  # the same validation windows at every evaluation
        batches = [self.data.batch("val", self.loop.batch_size, g) for _ in range(self.cfg.eval_batches)]
        total = count = 0
        for i in distributed.share(len(batches), ranks):  # each rank its share; the sums are reduced
            loss, n = self.loss(model, batches[i])
            total, count = total + loss.item(), count + n
        s = distributed.sums({"loss": total, "n": count}, ranks)
        return {"val_loss": s["loss"] / s["n"]}

    def save_extras(self, directory: Path) -> None:
        self.tokenizer.save(directory)


def build(run: dict, loop: LoopConfig):
    """(model, task) for a run config whose task is "lm"."""
    data_cfg = section_config(run, "data", LMDataConfig)
    for key, kind in (("bpe_vocab_size", "bpe"), ("gpt2_dir", "gpt2")):
        if data_cfg.tokenizer != kind:
            note_unused(run, "data", key, f'with tokenizer = "{kind}" (this one is "{data_cfg.tokenizer}")')
    files = text_files(data_cfg.files)
    texts = [read_text(f) for f in files]
    source = pretrained(run, "gpt")  # fine-tuning: its shape and tokenizer
    saved = saved_tokenizer(run)
    tokenizer = load_tokenizer(saved) if saved else build_tokenizer(data_cfg, files, "".join(texts))
    if source is not None:
        cfg = fine_tune_config(run, source.config, lower=("block_size",))
        if tokenizer.vocab_size != cfg.vocab_size:
            raise TokenizerError(
                f"{run['init']}: tokenizer vocabulary ({tokenizer.vocab_size}) does not match the model's "
                f"({cfg.vocab_size})"
            )
    else:
        cfg = model_config(PRESETS, run, vocab_size=tokenizer.vocab_size)
    chars = sum(map(len, texts))
    # a byte-level BPE encodes about 2 MB a second here: a large corpus gets a line saying what the wait is
    with timed(f"tokenizing {chars:,} characters") if chars > 5_000_000 else nullcontext():
        ids = token_stream(tokenizer, texts, files)
    data = LMData(ids, data_cfg.val_fraction, cfg.block_size, ", ".join(data_cfg.files))
    torch.manual_seed(loop.seed)
    model = GPT(cfg)
    if source is not None:
        weights = source.state_dict()
        # a shorter context (GPT-2's 1,024 is slow to train on a CPU) keeps the first learned positions
        if "embed.positions.weight" in weights:  # learned positions (a sinusoid has no weights)
            weights["embed.positions.weight"] = weights["embed.positions.weight"][: cfg.block_size]
        start_from(model, weights, run)
    return model, LMTask(data_cfg, loop, tokenizer, data)
