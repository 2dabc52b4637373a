"""Everything a run needs to continue exactly where it stopped: optimiser moments, step, the data
position and every random number generator. Tensors go to `training_state.safetensors`, the rest to
`trainer_state.json`; together with the model checkpoint beside them they make a run resumable with
the same losses, bit for bit, as if it had never stopped (on CPU).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from qkv.checkpoint import CheckpointError, atomic_write

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "training_state.safetensors"


def rank_state(task) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """This process's data position and RNG: what differs between the ranks of a multi-process run."""
    tensors, extra = task.state_dict()
    return {"rng": torch.get_rng_state(), **{f"task.{k}": v for k, v in tensors.items()}}, extra


def save_state(directory: Path, optimizer: torch.optim.Optimizer, ranks: list, meta: dict[str, Any]) -> None:
    """Write the optimiser (the same on every rank) and each rank's `rank_state` into `directory`."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    for r, (rank_tensors, _) in enumerate(ranks):
        tensors.update({f"rank{r}.{k}": v for k, v in rank_tensors.items()})
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(directory / STATE_TENSORS, lambda p: save_file(clean, str(p)))
    optim_meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    record = {**meta, "optimizer": optim_meta, "world": len(ranks), "ranks": [extra for _, extra in ranks]}
    atomic_write(directory / STATE_JSON, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))


def saved_step(directory: Path) -> int:
    """The last completed step of the checkpoint `directory` (read before any model is built)."""
    return int(saved_record(directory)["step"])


def saved_record(directory: Path) -> dict[str, Any]:
    """The JSON record of the checkpoint `directory`: step, best_val_loss, evaluations_since_best, ..."""
    try:
        record = json.loads((directory / STATE_JSON).read_text(encoding="utf-8"))
        int(record["step"])
        return record
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{directory / STATE_JSON}: training state cannot be read ({err})") from None


def check_readable(directory: Path) -> None:
    """Open the headers of a resumable checkpoint's two safetensors files (which also checks that
    they cover the whole file): a damaged one is an error before a resumed run writes anything."""
    for file in (directory / "model.safetensors", directory / STATE_TENSORS):
        try:
            with safe_open(str(file), "pt"):
                pass
        except (OSError, SafetensorError) as err:
            raise CheckpointError(f"{file}: cannot be read as safetensors ({err})") from None


def load_state(
    directory: Path, optimizer: torch.optim.Optimizer, task, rank: int = 0, world: int = 1
) -> dict[str, Any]:
    """Restore what `save_state` wrote; returns its JSON record (step, best_val_loss, ...). The data
    position and RNG are restored only when the run had as many processes as this one."""
    json_file, tensor_file = directory / STATE_JSON, directory / STATE_TENSORS
    if not tensor_file.is_file():
        raise CheckpointError(f"{tensor_file}: no such file (is {directory} a resumable checkpoint?)")
    try:
        record = json.loads(json_file.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_file))
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"{tensor_file}: training state cannot be read ({err})") from None
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in record["optimizer"]["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    # How the update is computed (fused, foreach) is this process's choice, not the checkpoint's: a run saved
    # by one process (fused) may resume under FSDP, whose sharded tensors keep PyTorch's default.
    groups = [
        {**saved, **{k: current[k] for k in ("fused", "foreach") if k in current}}
        for saved, current in zip(record["optimizer"]["param_groups"], optimizer.param_groups)
    ]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{tensor_file}: optimiser state does not match the model ({err})") from None
    if record["world"] == world:
        mine = f"rank{rank}."
        own = {k[len(mine) :]: v for k, v in tensors.items() if k.startswith(mine)}
        task.load_state_dict({k[5:]: v for k, v in own.items() if k.startswith("task.")}, record["ranks"][rank])
        torch.set_rng_state(own["rng"])
    elif rank == 0:
        print(
            f"note: {directory} was saved by {record['world']} process(es), this run has {world}: model and "
            "optimiser resume exactly, the data order starts afresh",
            flush=True,
        )
    return record
