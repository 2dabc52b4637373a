"""Batch-1 GPT decoding steps replayed as a CUDA graph.

At batch 1 a decode step is a few dozen small kernels, and on a GPU each takes longer to launch from
Python than to run: the H100 sat idle most of the step, so caching the prefix bought only 1.05-1.48x
over recomputing it (docs/PERFORMANCE.md). A CUDA graph records the step's kernels once and replays
them with one launch. A recording fixes every address and shape, so the recorded step reads its token
and position from tensors that stay in place and writes into a `StaticKVCache`, whose buffers span
the whole context window (attention covers all of it; `position_mask` hides the slots not yet written).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.models.gpt import GPT
from qkv.nn.cache import StaticKVCache


class GraphedSteps:
    """Next-token logits of a batch-1 GPT over a fixed-size cache; one-token steps replay a CUDA graph.

    capture=False runs the same fixed-buffer steps without recording them (any device; the tests
    check this path against the ordinary cache on the CPU).
    """

    def __init__(self, model: GPT, capture: bool) -> None:
        device = next(model.parameters()).device
        self.model, self.capture = model, capture
        self.token = torch.zeros(1, 1, dtype=torch.long, device=device)  # (1, 1) the recorded step's input
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # (1,) and its position
        self.cache = StaticKVCache(model.config.n_layers, model.config.block_size, self.position)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: Tensor | None = None  # (1, 1, V) the recorded step's output, overwritten by each replay

    def __call__(self, tokens: list[int], offset: int) -> Tensor:
        """Logits (1, V) after `tokens`, which sit at positions offset, offset + 1, ...; the positions
        before them are in the cache. offset + len(tokens) must not exceed the context window."""
        device = self.token.device
        if len(tokens) > 1:  # a prompt, or the window restarting: one ordinary forward into the buffers
            positions = torch.arange(offset, offset + len(tokens), device=device)
            return self.model(torch.tensor([tokens], device=device), self.cache.at(positions)).logits[:, -1]
        self.token.fill_(tokens[0])  # a fill with a Python number: a kernel argument, no copy from the host
        self.position.fill_(offset)
        self.cache.at(self.position)
        if not self.capture:
            return self.model(self.token, self.cache).logits[:, -1]
        if self.graph is None:
            self._record()
        self.graph.replay()
        return self.logits[:, -1]

    def _record(self) -> None:
        # One eager run first, on a side stream as CUDA graphs require: it creates the library handles
        # and workspaces that must not be allocated while recording. It writes the same keys and values
        # the first replay writes, so running it changes nothing.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.model(self.token, self.cache)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self.model(self.token, self.cache).logits
