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

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from qkv.nn.block import TransformerBlock

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on rank 0's CPU only
_FULL = StateDictOptions(full_state_dict=True)


def shard(model: nn.Module) -> nn.Module:
    """Shard `model` in place: one FSDP unit per block, then the root (embeddings, norms, heads)."""
    for module in model.modules():
        if isinstance(module, TransformerBlock):
            fully_shard(module)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def plain_copy(model: nn.Module) -> nn.Module:
    """An unsharded CPU model of the same class and config (FSDP swaps the class for a subclass)."""
    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    return cls(model.config)


def gathered(model: nn.Module, optimizer: torch.optim.Optimizer, build_optimizer):
    """(plain model, plain optimiser) holding the full state on rank 0, for it to save; (None, None) on
    the other ranks. Every rank must call this: it gathers."""
    weights = get_model_state_dict(model, options=_GATHER)
    moments = get_optimizer_state_dict(model, optimizer, options=_GATHER)
    if not weights:  # not rank 0: cpu_offload leaves the gathered state on rank 0 only
        return None, None
    plain = plain_copy(model)
    plain.load_state_dict(weights)
    plain_opt = build_optimizer(plain)
    set_optimizer_state_dict(plain, plain_opt, moments, options=_FULL)
    return plain, plain_opt


def load_full(model: nn.Module, optimizer: torch.optim.Optimizer, plain: nn.Module, plain_opt) -> None:
    """Copy a plain model and optimiser (read from a checkpoint on every rank) into the sharded ones."""
    set_model_state_dict(model, plain.state_dict(), options=_FULL)
    set_optimizer_state_dict(model, optimizer, get_optimizer_state_dict(plain, plain_opt, options=_FULL), options=_FULL)


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
