"""Fully sharded data parallel training (`train.parallel = "fsdp"`), with PyTorch's FSDP2 (`fully_shard`).

With DDP every rank holds the whole model, its gradients and both Adam moments. With FSDP each rank keeps
1/N of every parameter (and so of its gradient and optimiser state); a block's full weights are gathered
just before its forward and backward and freed after, and gradients are reduce-scattered. Each
TransformerBlock is its own unit, so only one block is ever whole at a time (plus the embeddings and
head, in the root unit).

Checkpoints keep the single-process layout: the full weights and optimiser state are gathered to the
CPU and written by rank 0 exactly as a one-process run writes them, so a checkpoint saved by N ranks
resumes in one process and vice versa.
"""

from __future__ import annotations

import contextlib
import sys

import torch
from torch import nn

from qkv.nn.block import TransformerBlock

# torch.distributed's FSDP and state-dict packages take 0.5-0.9 s to import: each function that needs
# them imports them, so a run that does not shard (and every rank of a DDP run) starts without them.


def _state_dicts():
    """torch.distributed.checkpoint.state_dict, imported when first needed."""
    import torch.distributed.checkpoint.state_dict as api

    return api


def _options(cpu_offload: bool):
    # whole tensors; with cpu_offload, gathered on rank 0's CPU only
    return _state_dicts().StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


def shard(model: nn.Module) -> nn.Module:
    """Shard `model` in place: one FSDP unit per block, then the root (embeddings, norms, heads)."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, TransformerBlock):
            fully_shard(module)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `shard` made `model` an FSDP module (which cannot be before FSDP is imported)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def plain_copy(model: nn.Module) -> nn.Module:
    """An unsharded CPU model of the same class and config (FSDP swaps the class for a subclass)."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    return cls(model.config)


def gathered(model: nn.Module, optimizer: torch.optim.Optimizer, build_optimizer):
    """(plain model, plain optimiser) holding the full state on rank 0, for it to save; (None, None) on
    the other ranks. Every rank must call this: it gathers."""
    api, gather = _state_dicts(), _options(cpu_offload=True)
    weights = api.get_model_state_dict(model, options=gather)
    moments = api.get_optimizer_state_dict(model, optimizer, options=gather)
    if not weights:  # not rank 0: cpu_offload leaves the gathered state on rank 0 only
        return None, None
    plain = plain_copy(model)
    plain.load_state_dict(weights)
    plain_opt = build_optimizer(plain)
    api.set_optimizer_state_dict(plain, plain_opt, moments, options=_options(cpu_offload=False))
    return plain, plain_opt


def load_full(model: nn.Module, optimizer: torch.optim.Optimizer, plain: nn.Module, plain_opt) -> None:
    """Copy a plain model and optimiser (read from a checkpoint on every rank) into the sharded ones."""
    api, full = _state_dicts(), _options(cpu_offload=False)
    api.set_model_state_dict(model, plain.state_dict(), options=full)
    moments = api.get_optimizer_state_dict(plain, plain_opt, options=full)
    api.set_optimizer_state_dict(model, optimizer, moments, options=full)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, sync: bool):
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP) on all but the last micro-batch."""
    if sync:
        yield
    elif is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with model.no_sync():
            yield
