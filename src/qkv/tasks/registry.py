"""Task name -> builder, listed explicitly (no registration by import side effect)."""

from qkv.models.bert import BertConfig
from qkv.models.gpt import GPTConfig
from qkv.models.seq2seq import Seq2SeqConfig
from qkv.tasks import bert, lm, translation

TASKS = {
    "translation": translation.build,
    "lm": lm.build,
    "bert_pretrain": bert.build_pretrain,
    "classify": bert.build_classify,
}

# Each task's [data] and [model] config classes: a key written under the wrong section is named with
# the section it belongs to (`runconfig.check_placement`).
SECTION_CLASSES = {
    "translation": {"data": translation.TranslationDataConfig, "model": Seq2SeqConfig},
    "lm": {"data": lm.LMDataConfig, "model": GPTConfig},
    "bert_pretrain": {"data": bert.PretrainDataConfig, "model": BertConfig},
    "classify": {"data": bert.ClassifyDataConfig, "model": BertConfig},
}

# What each task's `evaluate` reports (tests/test_loop.py checks these against the tasks): `train.best_metric`
# names one of them. A translation run reports val_bleu only while data.bleu_sentences > 0.
METRICS = {
    "translation": ("val_loss", "val_bleu"),
    "lm": ("val_loss",),
    "bert_pretrain": ("val_loss", "mlm_accuracy", "nsp_accuracy"),
    "classify": ("val_loss", "accuracy"),
}


def check_best_metric(run: dict, metric: str) -> None:
    """`train.best_metric` must be a metric this run's evaluations report."""
    from qkv.config import ConfigError
    from qkv.train.runconfig import where

    known = METRICS[run["task"]]
    if metric not in known:
        raise ConfigError(
            f"{where(run, 'train', 'best_metric')}: best_metric {metric!r} is not a metric of the {run['task']} "
            f"task (it reports {', '.join(known)})",
            key="best_metric",
        )
    if metric == "val_bleu" and run.get("data", {}).get("bleu_sentences", 1) == 0:
        raise ConfigError(
            f'{where(run, "train", "best_metric")}: best_metric "val_bleu" needs the validation BLEU that '
            "data.bleu_sentences = 0 turns off",
            key="best_metric",
        )
