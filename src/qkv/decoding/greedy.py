"""Greedy decoding for the encoder-decoder, one token per step with the KV cache."""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.models.seq2seq import EncoderDecoder


@torch.inference_mode()
def greedy_decode(model: EncoderDecoder, src: Tensor, max_len: int) -> Tensor:
    """src: (B, S) -> (B, <= max_len) generated ids after BOS; finished rows are padded after EOS.

    Row i's output does not depend on the other rows: the loop only stops early once every row is done.
    """
    c = model.config
    enc = model.encode(src)
    cache = model.new_cache()
    b = src.size(0)
    out = torch.full((b, max_len + 1), c.pad_id, dtype=torch.long, device=src.device)
    out[:, 0] = c.bos_id
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    for t in range(max_len):
        logits = model.decode(out[:, t : t + 1], enc.memory, enc.src_mask, cache).logits  # (B, 1, V)
        nxt = logits[:, -1].argmax(-1).masked_fill(done, c.pad_id)
        out[:, t + 1] = nxt
        done |= nxt == c.eos_id
        if bool(done.all()):
            return out[:, 1 : t + 2]
    return out[:, 1:]
