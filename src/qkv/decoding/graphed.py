"""Batch-1 GPT decoding steps replayed from a recording: a CUDA graph on a GPU, qkv's own recording of
the step's operators on the CPU (`qkv.decoding.recorded`).

At batch 1 a decode step is a few dozen small kernels, and on a GPU each takes longer to launch from
Python than to run: the H100 sat idle most of the step, so caching the prefix bought only 1.05-1.48x
over recomputing it (docs/PERFORMANCE.md). A CUDA graph records the step's kernels once and replays
them with one launch. A recording fixes every address and shape, so the recorded step reads its token
and position from tensors that stay in place and writes into a `StaticKVCache`, whose buffers span
the whole context window; attention reads a fixed prefix of them per graph, where `position_mask`
hides the slots not yet written. On the CPU the cost is Python's rather than launches', and the same
fixed-buffer step is what `qkv.decoding.recorded` can record.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from qkv.decoding.argmax import IntegerWeight, integer_argmax
from qkv.decoding.recorded import Unreplayable, record
from qkv.models.gpt import GPT
from qkv.nn.cache import KVCache, StaticKVCache

# A recording costs about what 10-15 replays save (on the CPU, the 4 x 128 GPT: 2.7 ms to record, 0.23 ms
# saved a step; the 124M model: one step's 23 ms, 1.4 ms saved a step; on an H100 a graph took 4-15 ms
# to record), so a window that fewer steps will reach runs eagerly. 8 new tokens of the small GPT on
# the CPU took 6.1 ms recorded and 4.6 ms eagerly (docs/PERFORMANCE.md, session 37).
MIN_REPLAYS = 16


class GraphedSteps:
    """Next-token logits of a batch-1 GPT over a fixed-size cache; one-token steps replay a recording.

    Attention over all the window's slots would make early steps slow (at batch 1 the kernel walks the
    keys of each head in turn), so a step reads only the first `window(position)` slots: the next power
    of two, at least 32. One recording is made per window length, when first needed (by at least
    MIN_REPLAYS steps): at most log2(block_size / 16) of them. On a GPU each is a CUDA graph, all
    sharing one memory pool; on the CPU, `qkv.decoding.recorded`'s (a step it cannot record, with a
    warning saying why, runs eagerly).

    capture=False runs the same fixed-buffer steps without recording them (any device; the tests
    check this path against the ordinary cache on the CPU).
    integer: greedy decoding's output layer in 8-bit integers (`argmax.row_screening`): each step then
    gives the next token itself, the argmax screened with integers (`argmax.integer_argmax`), instead
    of its logits.
    """

    def __init__(self, model: GPT, capture: bool, integer: IntegerWeight | None = None) -> None:
        device = next(model.parameters()).device
        self.model, self.capture, self.integer = model, capture, integer
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)  # (1, 1) the recorded steps' input
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # (1,) and its position
        self.cache = StaticKVCache(model.config.n_layers, model.config.block_size, self.position)
        # window length -> a replay giving the step's output (None: the step runs eagerly)
        self.replays: dict[int, Callable[[], Tensor] | None] = {}
        self.pool = None  # the CUDA graphs' shared memory pool, once the first is recorded

    def window(self, end: int) -> int:
        """The slots a forward reads when its last position is end - 1: at least 32, at most twice end."""
        return min(max(32, 1 << (end - 1).bit_length()), self.cache.capacity)

    def __call__(self, tokens: list[int], offset: int, steps_left: int | None = None) -> Tensor:
        """Logits (1, V) after `tokens` (with `integer`, the greedy next token (1,)), which sit at
        positions offset, offset + 1, ...; the positions before them are in the cache. offset +
        len(tokens) must not exceed the context window.
        steps_left: how many one-token steps the caller will still run, this one included (None: many).
        A window fewer than MIN_REPLAYS of them will reach is not recorded: they run eagerly."""
        device, end = self.token.device, offset + len(tokens)
        if len(tokens) > 1:  # a prompt, or the window restarting: one ordinary forward into the buffers
            cache = self.cache.at(torch.arange(offset, end, device=device), self.window(end))
            return next_after(self.model, torch.tensor([tokens], device=device), cache, self.integer)
        self.token.fill_(tokens[0])  # a fill with a Python number: a kernel argument, no copy from the host
        self.position.fill_(offset)
        window = self.window(end)
        self.cache.at(self.position, window)
        if not self.capture:
            return self.step()
        if window not in self.replays and steps_left is not None and min(steps_left, window - offset) < MIN_REPLAYS:
            return self.step()
        if window not in self.replays:  # recording computes this step's output too
            self.replays[window], out = self._record_graph() if device.type == "cuda" else self._record_cpu()
            return out
        replay = self.replays[window]
        return self.step() if replay is None else replay()

    def _record_cpu(self) -> tuple[Callable[[], Tensor] | None, Tensor]:
        # The cache's buffers are allocated at its first write, which a recording must find done: as
        # for a CUDA graph, an eager run first (it writes what the recording's run writes again).
        if any(layer.k is None for layer in self.cache.layers):
            self.step()
        try:
            return record(self.step)
        except Unreplayable as why:
            warnings.warn(f"qkv: this model's decoding step cannot be recorded ({why}); it runs eagerly", stacklevel=3)
            return None, self.step()

    def _record_graph(self) -> tuple[Callable[[], Tensor], Tensor]:
        # One eager run first, on a side stream as CUDA graphs require: it creates the library handles
        # and workspaces that must not be allocated while recording. It writes the same keys and values
        # the first replay writes, so running it changes nothing. Streams belong to the model's GPU,
        # which need not be the current one.
        with torch.cuda.device(self.token.device):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):  # one pool for all: they are replayed one at a time
                logits = self.step()
            if self.pool is None:
                self.pool = graph.pool()

        def replay() -> Tensor:
            with torch.cuda.device(logits.device):  # launched on the model's GPU, not the current one
                graph.replay()
            return logits  # overwritten by each replay

        return replay, replay()  # recording ran no kernel: the first replay computes this step

    def step(self) -> Tensor:
        """One forward of the token in `self.token` at `self.position` over the fixed buffers: its (1, V)
        logits, or with `integer` the next token (1,). What a graph records (a subclass may change how
        it runs: benchmarks/levers/graph_compile.py)."""
        return next_after(self.model, self.token, self.cache, self.integer)


def next_after(model: GPT, tokens: Tensor, cache: KVCache | StaticKVCache, integer: IntegerWeight | None) -> Tensor:
    """tokens (1, T) after those in `cache` -> the next-token logits (1, V) of the last position; with
    `integer` (`argmax.row_screening`), its greedy token (1,) instead, without the float32 scores."""
    if integer is None:
        return model(tokens, cache).logits[:, -1]
    states = model(tokens, cache, output_layer=False).logits[:, -1]  # (1, D)
    return integer_argmax(states, model.output.weight, model.output.bias, integer)
