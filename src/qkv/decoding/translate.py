"""Translating lists of sentences: tokenize, batch by length, decode, detokenize, restore order."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from qkv.data.padding import pad_sequences
from qkv.data.subword import PairTokenizer
from qkv.data.text import DataError
from qkv.decoding import check_ids
from qkv.decoding.beam import beam_search, check_search
from qkv.decoding.greedy import greedy_decode
from qkv.models.seq2seq import EncoderDecoder
from qkv.nn.weight_copies import packed_weights


def translate_ids(
    model: EncoderDecoder, src_ids: list[list[int]], beam: int, alpha: float = 0.6, max_extra: int = 50
) -> list[list[int]]:
    """One batch of source id lists -> output id lists (no BOS/EOS). beam 1 is greedy decoding."""
    check_search(beam, alpha, max_extra)
    if not src_ids:
        return []
    c = model.config
    check_ids((i for ids in src_ids for i in ids), c.src_vocab_size, "source")
    src = pad_sequences([ids + [c.eos_id] for ids in src_ids], c.pad_id).to(next(model.parameters()).device)
    if beam > 1:
        return [h.tokens for h in beam_search(model, src, beam, alpha, max_extra)]
    limits = [len(ids) + 1 + max_extra for ids in src_ids]  # each row's own limit, as beam search has
    out = greedy_decode(model, src, max(limits)).tolist()
    result = []
    for row, limit in zip(out, limits):
        row = row[:limit]
        result.append(row[: row.index(c.eos_id)] if c.eos_id in row else row)
    return result


def check_lengths(src_ids: list[list[int]], limit: int | None, source: str) -> None:
    """Refuse the first source that, with its EOS, needs more positions than the model has (learned
    positions, `position_limit`): the encoder has no vector for them. DataError names the line."""
    if limit is None:
        return
    for number, ids in enumerate(src_ids, 1):
        if len(ids) + 1 > limit:
            raise DataError(
                f"{source}:{number}: {len(ids) + 1} tokens with its end mark, more than the model's {limit} "
                "learned positions (model.max_len); split or shorten the line"
            )


# Written beside a trained translator's weights (`TranslationTask.save_extras`): the longest source
# sentence it was trained on, in tokens. A model trained on sentences rarely translates much past that
# length: sinusoidal positions reach any length (sec 3.5), but what the model learned about where a
# translation ends does not, and a paragraph comes back as one short sentence. `qkv translate` says
# so when an input is longer.
TRAINING_LENGTHS = "training_lengths.json"


def longest_trained_source(directory: str | Path) -> int | None:
    """The checkpoint's longest training source in tokens, or None where it was not recorded (a
    converted checkpoint, or one trained before the file existed)."""
    path = Path(directory) / TRAINING_LENGTHS
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["longest_source"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a training-lengths file ({err})") from None


def translate_lines(
    model: EncoderDecoder,
    tokenizer: PairTokenizer,
    lines: list[str],
    beam: int = 4,
    alpha: float = 0.6,
    batch_size: int = 64,
    progress: bool = False,
    source: str = "input",
    longest: int | None = None,
    long_lines: list[int] | None = None,
) -> list[str]:
    """Translations of `lines`, same order. Sentences are decoded in batches of similar length; an
    empty (or blank) line translates to an empty line instead of whatever the model says to nothing.
    source: what the lines are, for the error about one too long for the model (a file name).
    longest, long_lines: the 1-based number of each line with more source tokens than `longest` is
    added to `long_lines` (see TRAINING_LENGTHS), so that the caller can say so."""
    if beam < 1 or batch_size < 1:
        raise ValueError(f"beam ({beam}) and batch_size ({batch_size}) must be at least 1")
    src_ids = tokenizer.encode_src([line.strip() for line in lines])
    check_lengths(src_ids, model.config.position_limit, source)
    if longest is not None and long_lines is not None:
        long_lines.extend(i + 1 for i, ids in enumerate(src_ids) if len(ids) > longest)
    order = sorted((i for i in range(len(lines)) if src_ids[i]), key=lambda i: len(src_ids[i]))
    out: list[list[int]] = [[] for _ in lines]
    model.eval()
    with torch.inference_mode(), packed_weights():  # the weights rearranged for oneDNN once for all batches
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for chunk in tqdm(chunks, desc="translating", unit="batch", disable=not progress):
            for i, ids in zip(chunk, translate_ids(model, [src_ids[i] for i in chunk], beam, alpha)):
                out[i] = ids
    return tokenizer.decode_tgt(out)
