"""qkv: the Transformer family in one small PyTorch codebase.

import qkv
model = qkv.load("runs/demo/model")      # rebuild a saved model (safetensors + config.json)
qkv.save(model, "somewhere/else")
"""

from qkv.checkpoint import CheckpointError, load, save
from qkv.config import ConfigError
from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig

__version__ = "0.1.0"
__all__ = ["load", "save", "EncoderDecoder", "Seq2SeqConfig", "ConfigError", "CheckpointError", "__version__"]
