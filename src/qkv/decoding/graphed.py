"""Batch-1 GPT decoding steps replayed as a CUDA graph.

At batch 1 a decode step is a few dozen small kernels, and on a GPU each takes longer to launch from
Python than to run: the H100 sat idle most of the step, so caching the prefix bought only 1.05-1.48x
over recomputing it (docs/PERFORMANCE.md). A CUDA graph records the step's kernels once and replays
them with one launch. A recording fixes every address and shape, so the recorded step reads its token
and position from tensors that stay in place and writes into a `StaticKVCache`, whose buffers span
the whole context window; attention reads a fixed prefix of them per graph, where `position_mask`
hides the slots not yet written.
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.models.gpt import GPT
from qkv.nn.cache import StaticKVCache


class GraphedSteps:
    """Next-token logits of a batch-1 GPT over a fixed-size cache; one-token steps replay a CUDA graph.

    Attention over all the window's slots would make early steps slow (at batch 1 the kernel walks the
    keys of each head in turn), so a step reads only the first `window(position)` slots: the next power
    of two, at least 32. One graph is recorded per window length, when first needed: at most
    log2(block_size / 16) graphs, sharing one memory pool.

    capture=False runs the same fixed-buffer steps without recording them (any device; the tests
    check this path against the ordinary cache on the CPU).
    """

    def __init__(self, model: GPT, capture: bool) -> None:
        device = next(model.parameters()).device
        self.model, self.capture = model, capture
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)  # (1, 1) the recorded steps' input
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # (1,) and its position
        self.cache = StaticKVCache(model.config.n_layers, model.config.block_size, self.position)
        # window length -> (graph, its (1, 1, V) logits, overwritten by each replay)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}

    def window(self, end: int) -> int:
        """The slots a forward reads when its last position is end - 1: at least 32, at most twice end."""
        return min(max(32, 1 << (end - 1).bit_length()), self.cache.capacity)

    def __call__(self, tokens: list[int], offset: int) -> Tensor:
        """Logits (1, V) after `tokens`, which sit at positions offset, offset + 1, ...; the positions
        before them are in the cache. offset + len(tokens) must not exceed the context window."""
        device, end = self.token.device, offset + len(tokens)
        if len(tokens) > 1:  # a prompt, or the window restarting: one ordinary forward into the buffers
            cache = self.cache.at(torch.arange(offset, end, device=device), self.window(end))
            return self.model(torch.tensor([tokens], device=device), cache).logits[:, -1]
        self.token.fill_(tokens[0])  # a fill with a Python number: a kernel argument, no copy from the host
        self.position.fill_(offset)
        window = self.window(end)
        self.cache.at(self.position, window)
        if not self.capture:
            return self.step()[:, -1]
        if window not in self.graphs:
            self.graphs[window] = self._record()
        graph, logits = self.graphs[window]
        with torch.cuda.device(device):  # launched on the model's GPU, which need not be the current one
            graph.replay()
        return logits[:, -1]

    def _record(self) -> tuple[torch.cuda.CUDAGraph, Tensor]:
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
            pool = next(iter(self.graphs.values()))[0].pool() if self.graphs else None  # replayed one at a time
            with torch.cuda.graph(graph, pool=pool):
                logits = self.step()
        return graph, logits

    def step(self) -> Tensor:
        """One forward of the token in `self.token` at `self.position` over the fixed buffers: (1, 1, V)
        logits. What a graph records (a subclass may change how it runs: benchmarks/levers/graph_compile.py)."""
        return self.model(self.token, self.cache).logits
