"""Checkpoint averaging (sec 6.1: the base models use "a single model obtained by averaging the last
5 checkpoints, which were written at 10-minute intervals")."""

from __future__ import annotations

import shutil
from pathlib import Path

from qkv.checkpoint import CheckpointError, load, read_config, save


def average_checkpoints(directories: list[str | Path], out: str | Path) -> Path:
    """Mean of the weights of checkpoints that share one config; tokenizer files (and a
    translator's training lengths) come from the first."""
    if not directories:
        raise CheckpointError("no checkpoints to average")
    first_family, first_cfg = read_config(directories[0])
    model = load(directories[0])
    total = {k: v.double().clone() for k, v in model.state_dict().items()}
    for d in directories[1:]:
        if read_config(d) != (first_family, first_cfg):
            raise CheckpointError(
                f"{d}/config.json: differs from {directories[0]}/config.json; only the same model averages"
            )
        for k, v in load(d).state_dict().items():
            total[k] += v.double()
    model.load_state_dict({k: (v / len(directories)).to(model.state_dict()[k].dtype) for k, v in total.items()})
    out = Path(out)
    save(model, out)
    for f in Path(directories[0]).iterdir():
        if f.name.startswith(("tokenizer", "chars", "vocab", "merges", "training_lengths")) and f.is_file():
            shutil.copyfile(f, out / f.name)
    return out
