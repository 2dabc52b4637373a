"""Task name -> builder, listed explicitly (no registration by import side effect)."""

from qkv.tasks import bert, lm, translation

TASKS = {
    "translation": translation.build,
    "lm": lm.build,
    "bert_pretrain": bert.build_pretrain,
    "classify": bert.build_classify,
}
