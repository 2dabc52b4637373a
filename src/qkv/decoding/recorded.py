"""A decoding step recorded once and replayed on the CPU: what a CUDA graph is on a GPU
(`qkv.decoding.graphed`), done in Python for the CPU.

Why: at batch 1 a cached step of a small GPT is about 90 operator calls on tensors of a few hundred
numbers, and the Python that chooses them (module calls, parameter lookups, the checks that pick a
kernel, shape arithmetic) costs more than they do. The 4 x 128 GPT's fixed-buffer step took 440-475 us
eagerly and 213-263 us replayed (docs/PERFORMANCE.md, session 37).

What is recorded: each operator the step calls, PyTorch's (seen by a `TorchDispatchMode`, below the
Python that chose them) and qkv's compiled kernels (seen through `native.observed`: the dispatcher never
sees them), with where each argument came from: an earlier operator of the step (a slot), or something
that outlives the step (a weight, the fixed cache buffers, the token and position tensors, a number).
A replay calls the same operators in order; a view of a slot is remade with `as_strided`, its recorded
sizes and strides, where the view operator itself costs several times more. Views of what outlives the
step, and operators without tensor arguments (the window's `arange`), give the same tensor every time
and are kept as constants.

What Python decided while recording holds for every replay: the step must take whatever changes from
step to step from tensors (the fixed-buffer step does: `StaticKVCache`), and must have done its one-off
work (allocating the cache buffers) before; a CUDA graph asks the same. `record` refuses a step that
reads tensor values into Python, draws random numbers or writes into one of its constants, and checks
that a replay straight after the recording gives the recorded output bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

# _disable_current_modes is private, but it is how a qkv kernel's own PyTorch calls (its allocations)
# stay out of the recording; torch is pinned (pyproject.toml)
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from qkv.nn import native


@dataclass(frozen=True)
class _Slot:
    """An argument that is the output of an earlier operator of the step: vals[index] in a replay."""

    index: int


class Unreplayable(Exception):
    """The step does something a replay would not repeat; the message says what."""


class _Recorder(TorchDispatchMode):
    """Runs the step normally and writes down each operator call (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.program: list[tuple] = []  # ("view", source slot, size, stride, offset, slot) or ("call", ...)
        self.slots: dict[int, int] = {}  # id(tensor) -> slot, for the tensors the step made
        self.alive: list[Tensor] = []  # keeps them alive, so that no id is reused while recording
        self.constants: set[int] = set()  # ids of the constants the step made (factories and their views)

    def _slot(self, t: Tensor) -> int:
        self.slots[id(t)] = len(self.alive)
        self.alive.append(t)
        return len(self.alive) - 1

    def _ref(self, a):
        """An argument as the replay will find it: a _Slot, a tuple holding some, or the value itself."""
        if isinstance(a, Tensor) and id(a) in self.slots:
            return _Slot(self.slots[id(a)])
        if isinstance(a, (list, tuple)) and any(isinstance(x, Tensor) and id(x) in self.slots for x in a):
            return tuple(self._ref(x) for x in a)
        return a

    def add(self, name: str, fn: Callable, args: tuple, kwargs: dict, out, written: list, view: bool) -> None:
        """One call: fn(*args, **kwargs) gave out; `written` are the arguments it writes into."""
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if not all(isinstance(o, Tensor) for o in outs):
            raise Unreplayable(f"{name} returns a Python value: the step reads tensor values")
        if any(isinstance(w, Tensor) and id(w) in self.constants for w in written):
            raise Unreplayable(f"{name} writes into a tensor the recording keeps as a constant")
        refs = [self._ref(a) for a in args]
        krefs = {k: self._ref(v) for k, v in kwargs.items()}
        made_here = any(isinstance(r, (_Slot, tuple)) for r in (*refs, *krefs.values()))
        if view and isinstance(refs[0], _Slot):  # a view of a tensor the step made: remade by as_strided
            for o in outs:
                self.program.append(("view", refs[0].index, o.size(), o.stride(), o.storage_offset(), self._slot(o)))
        elif not made_here and (view or not any(isinstance(a, Tensor) for a in args) and not written):
            self.constants.update(id(o) for o in outs if not view or id(args[0]) in self.constants)
        else:  # an in-place write into what outlives the step returns it: it stays a value, not a slot
            slots = [None if any(o is a for a in written) and id(o) not in self.slots else self._slot(o) for o in outs]
            self.program.append(("call", fn, refs, krefs, slots, isinstance(out, (list, tuple))))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _draws(func, args, kwargs):
            raise Unreplayable(f"{func} draws random numbers")
        out = func(*args, **kwargs)
        writes = _writes(func)
        written = [a for i, a in enumerate(args) if i in writes] + [v for k, v in kwargs.items() if k in writes]
        self.add(str(func), func._op, args, kwargs, out, written, view=func.is_view)
        return out

    def observe(self, name: str, kernel: Callable) -> Callable:
        """A qkv kernel, wrapped to be recorded; its own PyTorch calls (allocations) are not."""

        def call(*args, **kwargs):
            with _disable_current_modes():
                out = kernel(*args, **kwargs)
            # qkv's kernels that write into an argument end in "_" (bias_relu_) and write their first
            self.add(name, kernel, args, kwargs, out, [args[0]] if name.endswith("_") else [], view=False)
            return out

        return call


def _draws(func, args: tuple, kwargs: dict) -> bool:
    """Whether a call draws random numbers. PyTorch tags each operator that can (SDPA and dropout among
    them), but with a dropout probability of 0, or outside training, they draw none."""
    if torch.Tag.nondeterministic_seeded not in func.tags:
        return False
    schema = func._schema.arguments
    value = {a.name: args[i] if i < len(args) else kwargs.get(a.name, a.default_value) for i, a in enumerate(schema)}
    p = value.get("dropout_p", value.get("p"))
    return value.get("train") is not False and not (isinstance(p, (int, float)) and p == 0)


@cache
def _writes(func) -> frozenset:
    """The positions and names of the arguments an operator writes into (Tensor(a!) in its schema)."""
    return frozenset(
        key
        for i, a in enumerate(func._schema.arguments)
        if a.alias_info is not None and a.alias_info.is_write
        for key in (i, a.name)
    )


class RecordedStep:
    """A recorded step: calling it runs the recorded operators again and returns the step's output."""

    def __init__(self, program: list[tuple], n_slots: int, output: int) -> None:
        self.n_slots, self.output = n_slots + 1, output  # the last slot takes what no slot was given
        self.program = []
        for op in _direct_views(program, output):
            if op[0] == "call":
                op = (*op[:4], [n_slots if s is None else s for s in op[4]], op[5])
            # a call whose tensors from the step are all top-level positional arguments becomes
            # ("fast", fn, args, [(position, slot)], out slots, several outputs): no per-argument tests
            if op[0] == "call" and not op[3] and not any(isinstance(a, tuple) for a in op[2]):
                _, fn, refs, _, slots, several = op
                holes = [(i, r.index) for i, r in enumerate(refs) if isinstance(r, _Slot)]
                self.program.append(("fast", fn, list(refs), holes, slots, several))
            else:
                self.program.append(op)

    def __call__(self) -> Tensor:
        vals: list = [None] * self.n_slots
        for op in self.program:
            kind = op[0]
            if kind == "view":
                _, source, size, stride, offset, slot = op
                vals[slot] = vals[source].as_strided(size, stride, offset)
                continue
            if kind == "fast":
                _, fn, args, holes, slots, several = op
                args = args.copy()
                for i, slot in holes:
                    args[i] = vals[slot]
                out = fn(*args)
            else:
                _, fn, refs, krefs, slots, several = op
                out = fn(*(_resolve(r, vals) for r in refs), **{k: _resolve(r, vals) for k, r in krefs.items()})
            if several:
                for slot, o in zip(slots, out):
                    vals[slot] = o
            else:
                vals[slots[0]] = out
        return vals[self.output]


def _direct_views(program: list[tuple], output: int) -> list[tuple]:
    """The program with each view taken straight from the tensor that owns its memory (as_strided's
    offset counts from the start of the memory, so the views between are not needed), and without the
    views nothing reads any more: a chain view -> permute -> select becomes one as_strided."""
    owner: dict[int, int] = {}  # a view's slot -> the slot of the tensor that owns its memory
    direct = []
    for op in program:
        if op[0] == "view":
            _, source, size, stride, offset, slot = op
            owner[slot] = owner.get(source, source)
            op = ("view", owner[slot], size, stride, offset, slot)
        direct.append(op)
    program = direct
    read = {output} | {op[1] for op in program if op[0] == "view"}
    for op in program:
        if op[0] == "call":
            read.update(_slots_in(op[2]) | _slots_in(list(op[3].values())))
    return [op for op in program if op[0] != "view" or op[5] in read]


def _slots_in(refs) -> set[int]:
    found = set()
    for r in refs:
        if isinstance(r, _Slot):
            found.add(r.index)
        elif isinstance(r, tuple):
            found |= _slots_in(r)
    return found


def _resolve(ref, vals: list):
    if isinstance(ref, _Slot):
        return vals[ref.index]
    return type(ref)(_resolve(r, vals) for r in ref) if isinstance(ref, tuple) else ref


def record(step: Callable[[], Tensor]) -> tuple[RecordedStep, Tensor]:
    """Run step() once while recording it: the recording, checked by one replay (see the module's
    docstring), and what that run returned (the caller's result for that step). Raises Unreplayable
    where the step cannot be replayed, saying why."""
    recorder = _Recorder()
    with torch.inference_mode(), native.observed(recorder.observe), recorder:
        out = step()
    if not isinstance(out, Tensor) or id(out) not in recorder.slots:
        raise Unreplayable("the step's output is not something it computed")
    replay = RecordedStep(recorder.program, len(recorder.alive), recorder.slots[id(out)])
    with torch.inference_mode():
        again = replay()
    if not torch.equal(again, out):
        raise Unreplayable("a replay did not give the recorded output")
    return replay, out
