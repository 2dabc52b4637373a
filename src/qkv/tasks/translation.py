"""Machine translation with the encoder-decoder (sec 5): BPE, token-bounded batches, teacher forcing,
label-smoothed loss; validation loss and BLEU."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from qkv.config import Config, ConfigError, require
from qkv.data.batching import EpochBatches, token_batches
from qkv.data.padding import pad_sequences
from qkv.data.parallel import EmptyPolicy, ParallelCorpus, read_parallel
from qkv.data.subword import SPECIALS, PairTokenizer
from qkv.data.tokenizers import TokenizerError
from qkv.decoding.translate import TRAINING_LENGTHS, translate_lines
from qkv.models.seq2seq import PRESETS, EncoderDecoder
from qkv.nn import native
from qkv.tasks.common import info, timed, to_model
from qkv.tasks.init import fine_tune_config, pretrained, saved_tokenizer, start_from
from qkv.train import distributed
from qkv.train.distributed import Ranks
from qkv.train.loop import LoopConfig
from qkv.train.losses import label_smoothed_cross_entropy, output_smoothed_cross_entropy
from qkv.train.runconfig import model_config, section_config, where

PAD, BOS, EOS = (SPECIALS.index(s) for s in ("<pad>", "<s>", "</s>"))  # the ids every translation tokenizer gives


@dataclass(frozen=True)
class TranslationDataConfig(Config):
    train_src: str
    train_tgt: str
    valid_src: str
    valid_tgt: str
    vocab_size: int = 8000  # BPE vocabulary (each, when not shared)
    shared_vocab: bool = True  # one vocabulary and one embedding matrix for both languages (sec 3.4)
    max_len: int = 100  # training pairs with more subword tokens on either side are dropped (and counted)
    empty_lines: EmptyPolicy = "error"  # or "skip": drop pairs with an empty side
    max_tokens: int = 4096  # padded tokens per batch, per side (the paper: about 25,000 on 8 GPUs)
    bleu_sentences: int = 500  # validation BLEU (greedy) on this many sentences at each evaluation; 0 = off
    label_smoothing_eval: bool = False  # report val_loss with label smoothing (as trained) or plain NLL

    def validate(self) -> None:
        require(self.vocab_size >= 16, "data.vocab_size must be at least 16", key="vocab_size")
        require(self.max_len >= 1, "data.max_len must be at least 1", key="max_len")
        require(self.max_tokens >= self.max_len, "data.max_tokens must be at least data.max_len", key="max_tokens")
        require(self.bleu_sentences >= 0, "data.bleu_sentences must be at least 0", key="bleu_sentences")


class TranslationTask:
    unit = "tokens"  # what `loss` counts

    def __init__(self, cfg, optim_eps: float, tokenizer: PairTokenizer, train, valid, seed: int) -> None:
        self.cfg, self.eps, self.tokenizer = cfg, optim_eps, tokenizer
        self.train_src, self.train_tgt = train
        self.valid_text = valid
        lens_s, lens_t = [len(s) for s in self.train_src], [len(t) + 1 for t in self.train_tgt]
        self.stream = EpochBatches(token_batches(lens_s, lens_t, cfg.max_tokens), seed)
        v_src, v_tgt = tokenizer.encode_src(valid[0]), tokenizer.encode_tgt(valid[1])
        self.valid_batches = [
            self._tensors([v_src[i] for i in b], [v_tgt[i] for i in b])
            for b in token_batches([len(s) for s in v_src], [len(t) + 1 for t in v_tgt], cfg.max_tokens)
        ]

    @staticmethod
    def _tensors(src_ids, tgt_ids):
        """src (B, S) ending in EOS; decoder input (B, T) starting with BOS; target (B, T) ending in EOS."""
        src = pad_sequences([s + [EOS] for s in src_ids], PAD)
        tgt = pad_sequences([[BOS] + t + [EOS] for t in tgt_ids], PAD)
        return src, tgt[:, :-1], tgt[:, 1:]

    def train_batch(self):
        idx = self.stream.next()
        return self._tensors([self.train_src[i] for i in idx], [self.train_tgt[i] for i in idx])

    def loss(self, model: EncoderDecoder, batch):
        src, tgt_in, tgt_out = to_model(batch, model)
        return translation_loss(model, src, tgt_in, tgt_out, self.eps)

    @torch.inference_mode()
    def evaluate(self, model: EncoderDecoder, ranks: Ranks = Ranks()) -> dict[str, float]:
        """Validation loss and greedy BLEU; with several processes each rank takes its share of the
        batches and sentences, and the sums (and the translations) are combined on every rank."""
        import sacrebleu

        model.eval()
        total = count = 0
        eps = self.eps if self.cfg.label_smoothing_eval else 0.0
        for i in distributed.share(len(self.valid_batches), ranks):
            src, tgt_in, tgt_out = to_model(self.valid_batches[i], model)
            loss, n = translation_loss(model, src, tgt_in, tgt_out, eps)
            total, count = total + loss.item(), count + n
        s = distributed.sums({"loss": total, "n": count}, ranks)
        metrics = {"val_loss": s["loss"] / s["n"]}
        sources, refs = self.valid_text[0][: self.cfg.bleu_sentences], self.valid_text[1][: self.cfg.bleu_sentences]
        if sources:
            mine = translate_lines(
                model, self.tokenizer, [sources[i] for i in distributed.share(len(sources), ranks)], 1
            )
            parts = distributed.gather(mine, ranks)  # rank r translated sentences r, r + world, ...
            hyps = [parts[i % ranks.world][i // ranks.world] for i in range(len(sources))]
            metrics["val_bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
        return metrics

    def save_extras(self, directory: Path) -> None:
        self.tokenizer.save(directory)
        longest = max((len(s) for s in self.train_src), default=0)
        (directory / TRAINING_LENGTHS).write_text(json.dumps({"longest_source": longest}) + "\n")

    def shard(self, rank: int, world: int) -> None:
        self.stream.shard(rank, world)

    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, tensors, extra) -> None:
        self.stream.load_state_dict(tensors, extra)


def translation_loss(model, src, tgt_in, tgt_out, eps: float) -> tuple[torch.Tensor, int]:
    """Summed label-smoothed loss of teacher-forced `model` and the number of target tokens. The output
    layer is applied by the criterion, a block of rows at a time (`output_smoothed_cross_entropy`),
    except under FSDP, whose sharded weights only the model's own forward may use. `model` may be a
    DistributedDataParallel wrapper (the layer is then `model.module.output`); PAD is what
    `TranslationTask._tensors` padded with."""
    output = getattr(model, "module", model).output
    if not native.plain(output.weight):  # FSDP's DTensor
        return label_smoothed_cross_entropy(model(src, tgt_in), tgt_out, eps, PAD)
    states = model(src, tgt_in, output_layer=False)  # (B, T, D), through the wrapper's forward
    return output_smoothed_cross_entropy(states, output.weight, output.bias, tgt_out, eps, PAD)


def build(run: dict, loop: LoopConfig):
    """(model, task) for a run config whose task is "translation"."""
    from qkv.train.optim import for_run as optim_for_run

    cfg = section_config(run, "data", TranslationDataConfig)
    train = read_parallel(cfg.train_src, cfg.train_tgt, cfg.empty_lines)
    valid = read_parallel(cfg.valid_src, cfg.valid_tgt, cfg.empty_lines)
    source = pretrained(run, "seq2seq")  # fine-tuning: its shape and tokenizer
    if saved_tokenizer(run):
        tokenizer = PairTokenizer.load(saved_tokenizer(run))
    else:
        kind = "one shared BPE vocabulary" if cfg.shared_vocab else "a BPE vocabulary for each side"
        with timed(f"tokenizer: training {kind} ({cfg.vocab_size:,} tokens) on {len(train.src):,} sentence pairs"):
            tokenizer = PairTokenizer.train(train.src, train.tgt, cfg.vocab_size, cfg.shared_vocab)
    src_ids, tgt_ids = tokenizer.encode_src(train.src), tokenizer.encode_tgt(train.tgt)
    keep = [i for i in range(len(src_ids)) if len(src_ids[i]) < cfg.max_len and len(tgt_ids[i]) < cfg.max_len]
    dropped = len(src_ids) - len(keep)
    info(
        f"training pairs: {len(keep):,} kept, {dropped:,} dropped as longer than {cfg.max_len} tokens, "
        f"{train.skipped_empty:,} skipped as empty"
    )
    v_src, v_tgt = tokenizer.vocab_sizes
    if source is not None:
        model_cfg = fine_tune_config(run, source.config)
        if (v_src, v_tgt) != (model_cfg.src_vocab_size, model_cfg.tgt_vocab_size):
            raise TokenizerError(
                f"{run['init']}: tokenizer vocabulary {(v_src, v_tgt)} does not match the model's "
                f"{(model_cfg.src_vocab_size, model_cfg.tgt_vocab_size)}"
            )
    else:
        model_cfg = model_config(
            PRESETS,
            run,
            src_vocab_size=v_src,
            tgt_vocab_size=v_tgt,
            share_embeddings=cfg.shared_vocab,
            pad_id=PAD,
            bos_id=BOS,
            eos_id=EOS,
        )
    valid = _fit_validation(valid, tokenizer, model_cfg.position_limit, cfg, run)
    optim = optim_for_run(run, loop.steps)
    torch.manual_seed(loop.seed)
    model = EncoderDecoder(model_cfg)
    if source is not None:
        start_from(model, source.state_dict(), run)
    task = TranslationTask(
        cfg,
        optim.label_smoothing,
        tokenizer,
        ([src_ids[i] for i in keep], [tgt_ids[i] for i in keep]),
        (valid.src, valid.tgt),
        loop.seed,
    )
    return model, task


def _fit_validation(
    valid: ParallelCorpus, tokenizer: PairTokenizer, limit: int | None, cfg: TranslationDataConfig, run: dict
) -> ParallelCorpus:
    """With learned positions (`limit`), training pairs must fit the model's positions, and validation
    pairs that do not fit are left out (counted), as over-long training pairs are. A kept training
    pair has fewer than data.max_len tokens a side, so with its BOS or EOS it needs data.max_len."""
    if limit is None:
        return valid
    if cfg.max_len > limit:
        raise ConfigError(
            f"{where(run, 'data', 'max_len')}: max_len {cfg.max_len} needs more than the model's {limit} learned "
            f"positions (model.max_len); set data.max_len <= {limit}, or model.max_len >= {cfg.max_len}"
        )
    v_src, v_tgt = tokenizer.encode_src(valid.src), tokenizer.encode_tgt(valid.tgt)
    keep = [i for i in range(len(v_src)) if len(v_src[i]) < limit and len(v_tgt[i]) < limit]
    if len(keep) < len(v_src):
        info(f"validation pairs: {len(v_src) - len(keep):,} left out as longer than the model's {limit} positions")
    return ParallelCorpus([valid.src[i] for i in keep], [valid.tgt[i] for i in keep], valid.skipped_empty)
