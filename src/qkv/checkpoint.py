"""Checkpoints as directories: `model.safetensors` + `config.json` (+ tokenizer/vocabulary files).

Only safetensors and JSON are ever read, so loading a checkpoint cannot run code (no pickle). The
config names the model family and carries every constructor argument, so `load` rebuilds the model
without any other input. Files are written to a temporary name and renamed, so a crash mid-write
leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from qkv.config import ConfigError
from qkv.models.bert import Bert, BertConfig
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig

FORMAT_VERSION = 1
# family name -> (config class, model class). Explicit: no registration by import side effect.
FAMILIES: dict[str, tuple[type, Callable[..., nn.Module]]] = {
    "seq2seq": (Seq2SeqConfig, EncoderDecoder),
    "gpt": (GPTConfig, GPT),
    "bert": (BertConfig, Bert),
}


class CheckpointError(ValueError):
    """A checkpoint directory is missing, damaged or inconsistent; the message names the file."""


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Run write(tmp) on a temporary file beside `path`, fsync it, then rename it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def replace_directory(final: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with fill(tmp) beside `final`, then swap it in. At every moment either the
    old complete `final` or the new one exists (for an instant, only as `.NAME.old`, which resuming
    also looks at), never a half-written one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old")
    if tmp.exists():  # an interrupted earlier save: never the only copy (final or old still stands)
        shutil.rmtree(tmp)
    if old.exists() and final.exists():  # old is only kept while it is the one complete copy
        shutil.rmtree(old)
    tmp.mkdir()
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def save(model: nn.Module, path: str | Path) -> Path:
    """Write `model` (which has `.family` and `.config`) into directory `path`; returns the path.
    A model wrapped for training (DistributedDataParallel, torch.compile) is saved as the model inside,
    under the same names, so that `load` reads it back."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model._orig_mod
    if getattr(model, "family", None) not in FAMILIES:
        raise TypeError(f"qkv.save writes qkv models (EncoderDecoder, GPT, Bert), not {type(model).__name__}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a directory (a checkpoint is a directory)")
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "family": model.family, "config": model.config.to_dict()}
    # save_model drops the duplicate names of tied weights (safetensors forbids shared storage).
    atomic_write(path / "model.safetensors", lambda p: save_model(model, str(p)))
    atomic_write(path / "config.json", lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return path


def read_config(path: str | Path):
    """(family, config object) from `path/config.json`."""
    file = Path(path) / "config.json"
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise CheckpointError(f"{file}: not a qkv checkpoint config (a JSON object with family and config)")
        if "family" not in meta and "model_type" in meta:  # the Hugging Face layout, not yet converted
            raise CheckpointError(
                f"{path}: is a Hugging Face checkpoint (model_type {meta['model_type']!r}), not a qkv one; "
                f"convert it first: qkv convert --from-hf {path} --out DIR"
            )
        version = meta.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(
                f"{file}: format_version {version!r}; this qkv reads 1 to {FORMAT_VERSION} (written by a newer qkv?)"
            )
        family = meta["family"]
        config_cls, _ = FAMILIES[family]
        return family, config_cls.from_dict(meta["config"], source=str(file))
    except FileNotFoundError:
        inside = [Path(path) / name for name in ("best", "last") if (Path(path) / name / "config.json").is_file()]
        if inside:  # a training run's directory: its checkpoints are one level down
            raise CheckpointError(
                f"{path}: is a training run, not a checkpoint; give one of its checkpoints: "
                + " or ".join(map(str, inside))
            ) from None
        raise CheckpointError(f"{file}: no such file (is {path} a qkv checkpoint directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file}: not valid JSON ({err})") from None
    except KeyError as err:
        raise CheckpointError(f"{file}: missing or unknown entry {err}") from None
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


def load_weights(model: nn.Module, weights: Path, device: str | torch.device = "cpu") -> None:
    """Read `weights` (a model.safetensors) into `model`, every name and shape checked; CheckpointError
    naming the file when it is missing, damaged or of another model."""
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such file")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: cannot be read as safetensors ({err})") from None
    except RuntimeError as err:  # shape mismatch between config and weights
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{weights}: does not match config.json ({first})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in directory `path`, in eval mode, on `device`."""
    device = _usable(device)
    family, config = read_config(path)
    model = FAMILIES[family][1](config)
    weights = Path(path) / "model.safetensors"
    load_weights(model, weights, device)
    # safetensors has no checksum: damaged bytes read as weights would surface later as NaN logits
    bad = next((name for name, t in model.state_dict().items() if not torch.isfinite(t).all()), None)
    if bad is not None:
        raise CheckpointError(f"{weights}: {bad} holds NaN or infinite values (a damaged file, or a diverged run)")
    return model.to(device).eval()


def _usable(device: str | torch.device) -> torch.device:
    """`device` as a torch.device, refused by name when torch cannot use it (otherwise the error would
    come from reading the weights, and blame the file)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r}: not a device torch knows ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: torch sees no CUDA device")
    return device
