"""Runs that start from a checkpoint (`init = DIR` in the run config): fine-tuning a GPT on new text,
a translator on new pairs, BERT on a classification task or on more pre-training text.

The checkpoint decides the model's shape and its tokenizer; the run config's [model] may change only
what fine-tuning commonly changes (dropout: pre-training configs often turn it off), and any other
[model] key must agree with the checkpoint, so that nothing asked for is silently not done.
`init_weights = false` keeps the shape and tokenizer but not the weights: the same model untrained,
the baseline that isolates what the checkpoint's training gave.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from qkv.config import Config, ConfigError, unknown_key_hint
from qkv.tasks.common import info
from qkv.train.runconfig import where

ADJUSTABLE = ("dropout", "attention_dropout")
NAMES = {"gpt": "a GPT", "seq2seq": "an encoder-decoder", "bert": "a BERT"}


def pretrained(run: dict[str, Any], family: str) -> nn.Module | None:
    """The `init` checkpoint's model, checked to be of `family`; None for a run from scratch. A resumed
    run reads its own checkpoint instead: the same shape, its weights replace these anyway, and the
    `init` directory need not be there any more."""
    from qkv.checkpoint import CheckpointError, load

    if not run.get("init"):
        return None
    path = run.get("_resume") or run["init"]
    model = load(path)
    if model.family != family:
        raise CheckpointError(f"{path}: is {NAMES.get(model.family, model.family)} model, not {NAMES[family]}")
    if not run.get("_resume"):
        weights = "its weights" if run.get("init_weights", True) else "fresh weights (init_weights = false)"
        info(f"init: starting from {run['init']}: its shape and tokenizer, {weights}")
    return model


def saved_tokenizer(run: dict[str, Any]) -> str | None:
    """The checkpoint whose tokenizer the run reads: the one it resumes (a new training need not give
    the same vocabulary: the WordPiece trainer breaks ties by hash order), else the `init` one; None
    when the task trains its own."""
    return run.get("_resume") or run.get("init") or None


def fine_tune_config(run: dict[str, Any], config: Config, lower: tuple[str, ...] = (), **changes: Any) -> Config:
    """The checkpoint's `config` with the [model] keys that may change applied, then `changes` (what the
    task sets, such as a classifier's head). `preset` is ignored: the checkpoint's shape is used.
    lower: keys that [model] may also set below the checkpoint's value (a GPT's block_size)."""
    given = {k: v for k, v in run["model"].items() if k != "preset"}
    unknown = sorted(set(given) - set(config.field_names()))
    if unknown:
        hint = unknown_key_hint(unknown, config.field_names())
        raise ConfigError(
            f"{where(run, 'model', unknown[0])}: unknown key(s) {unknown} for {type(config).__name__}; {hint}"
        )
    for key, value in given.items():
        if key in lower and isinstance(value, int) and value > getattr(config, key):
            raise ConfigError(
                f"{where(run, 'model', key)}: `{key}` may be lowered from {run['init']}'s {getattr(config, key)!r}"
                f" when the run starts from it (init), not raised to {value!r}"
            )
        if key not in ADJUSTABLE + lower and value != getattr(config, key):
            may = ", ".join(ADJUSTABLE) + "".join(f", lower {k}" for k in lower)
            raise ConfigError(
                f"{where(run, 'model', key)}: `{key}` is {run['init']}'s ({getattr(config, key)!r}) when the run "
                f"starts from it (init); [model] may change only {may}"
            )
    adjusted = {k: v for k, v in given.items() if k in ADJUSTABLE + lower}
    return type(config).from_dict({**config.to_dict(), **adjusted, **changes}, source=where(run, "model", None))


def start_from(
    model: nn.Module, weights: dict[str, Tensor], run: dict[str, Any], keep: Callable[[str], bool] = bool
) -> None:
    """Copy the `weights` whose names `keep` accepts into `model` (unless `init_weights = false`);
    every weight of `model` that is not copied must be one `keep` refused (a new head)."""
    if not run.get("init_weights", True):
        return
    state = {k: v for k, v in weights.items() if keep(k)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(not keep(k) for k in missing), (missing, unexpected)
