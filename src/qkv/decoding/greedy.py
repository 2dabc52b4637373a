"""Greedy decoding for the encoder-decoder, one token per step with the KV cache."""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.decoding.argmax import output_argmax
from qkv.decoding.encoding import encode_by_length
from qkv.models.seq2seq import EncoderDecoder
from qkv.nn.weight_copies import packed_weights


@torch.inference_mode()
@packed_weights()  # each weight rearranged for oneDNN once per call, not once per step (qkv.nn.linear)
def greedy_decode(model: EncoderDecoder, src: Tensor, max_len: int) -> Tensor:
    """src: (B, S) -> (B, <= max_len) generated ids after BOS; finished rows are padded after EOS.
    With learned positions, max_len is at most the model's `position_limit`.

    Row i's output does not depend on the other rows. Finished rows leave the batch once they are a
    quarter of it (then their cache, memory and mask rows are dropped), so later steps compute only
    the sentences still being written; the loop ends when every row is done.
    """
    c = model.config
    if c.position_limit is not None:  # learned positions: the decoder has no vector for later ones
        max_len = min(max_len, c.position_limit)
    enc = encode_by_length(model, src)  # rows in groups of similar length: less padding to compute
    memory, src_mask, cache = enc.memory, enc.src_mask, model.new_cache()
    b = src.size(0)
    out = torch.full((b, max_len + 1), c.pad_id, dtype=torch.long, device=src.device)
    out[:, 0] = c.bos_id
    rows = torch.arange(b, device=src.device)  # (B_live,) the row of `out` each live row writes
    last = out[:, :1]  # (B_live, 1) the newest token of each live row
    done = torch.zeros(b, dtype=torch.bool, device=src.device)  # (B_live,) ended, not yet dropped
    for t in range(max_len):
        states = model.decoder_states(last, memory, src_mask, cache)[0]  # (B_live, 1, D)
        # the largest score's index without every score in float32 where that is faster (decoding.argmax)
        nxt = output_argmax(states[:, -1], model.output).masked_fill(done, c.pad_id)
        out[rows, t + 1] = nxt
        done |= nxt == c.eos_id
        finished = int(done.sum())
        if finished == len(rows):
            return out[:, 1 : t + 2]
        if 4 * finished >= len(rows):  # dropping rows copies their caches: worth it once enough ended
            keep = (~done).nonzero().squeeze(1)
            cache.reorder(keep, keep)
            memory, src_mask, rows, nxt = memory[keep], src_mask[keep], rows[keep], nxt[keep]
            done = done[keep]
        last = nxt.unsqueeze(1)
    return out[:, 1:]
