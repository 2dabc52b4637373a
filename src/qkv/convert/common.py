"""Shared pieces of the Hugging Face converters: reading safetensors and loading renamed weights."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Callable, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from qkv.checkpoint import CheckpointError, atomic_write
from qkv.config import ConfigError

T = TypeVar("T")


def read_json(path: Path) -> dict:
    """A JSON object (config.json, vocab.json); CheckpointError naming the file otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return value


def names_the_file(config_from_hf: Callable[..., T]) -> Callable[..., T]:
    """Wrap a `config_from_hf(hf, source, ...)`: an entry it needs that is missing, or a value of the
    wrong type or range, becomes one CheckpointError naming `source` (the config.json)."""

    @functools.wraps(config_from_hf)
    def read(hf: dict, source: Path, *args, **kwargs) -> T:
        try:
            return config_from_hf(hf, source, *args, **kwargs)
        except KeyError as err:
            raise CheckpointError(f"{source}: no {err.args[0]!r} entry") from None
        except (ConfigError, TypeError) as err:
            raise CheckpointError(f"{source}: {err}") from None

    return read


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (never a pickle: `pytorch_model.bin` is refused)."""
    if not path.is_file():
        alt = path.with_name("pytorch_model.bin")
        extra = f"; {alt.name} exists but pickled weights are never loaded" if alt.exists() else ""
        raise CheckpointError(f"{path}: no such file{extra}")
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: cannot be read as safetensors ({err})") from None


def load_renamed(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load `tensors` (already in qkv names) into `model`, checking every name and shape."""
    expected = {k: v for k, v in model.state_dict().items()}
    # tied weights appear once in `tensors`; state_dict lists them under every name
    tied = {name for name, p in model.named_parameters(remove_duplicate=False)} - {
        n for n, _ in model.named_parameters()
    }
    missing = sorted(set(expected) - set(tensors) - tied)
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the config (missing {missing[:4]}, unexpected {unexpected[:4]})"
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(t.shape)}, config implies {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors, strict=False)


def write_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    clean = {k: v.detach().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda p: save_file(clean, str(p), metadata=metadata))


def copy_files(src: Path, dst: Path, names: tuple[str, ...]) -> list[str]:
    copied = []
    for name in names:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    return copied
