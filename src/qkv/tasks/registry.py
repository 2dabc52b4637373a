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
