"""What beam search gains by letting each finished sentence leave the batch (session 14).

    python benchmarks/levers/beam_rows.py [--rounds 5]      (needs runs/multi30k_de_en/best)

qkv's `beam_search` drops a sentence's K rows (their cache, encoder output and mask) as soon as the
sentence is done, so later steps compute only the sentences still being written. The variant here,
which exists only to measure, keeps every sentence's rows in the batch until the last one is done
(their steps are computed and ignored), with the same per-sentence decisions; the outputs must be
identical. The trained de->en model, 512 test2016 sentences in batches of 64 sorted by length, beam 4,
alpha 0.6; sentences/s, medians of alternating rounds.
"""

import argparse
import statistics
import time

import torch
from test2016 import model_and_batches

from qkv.decoding.beam import Hypothesis, _advance, beam_search, best_candidates, length_penalty


@torch.inference_mode()
def beam_search_all_rows(model, src, k: int = 4, alpha: float = 0.6, max_extra: int = 50) -> list[Hypothesis]:
    """beam_search's decisions, with no sentence ever leaving the batch."""
    c, b = model.config, src.size(0)
    max_len = ((src != c.pad_id).sum(1) + max_extra).tolist()
    enc = model.encode(src)
    cache = model.new_cache()
    history = torch.full((b * k, 1), c.bos_id, dtype=torch.long)
    scores = torch.full((b, k), float("-inf"))
    scores[:, 0] = 0.0
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    done = [False] * b
    step = 0
    while not all(done):
        step += 1
        logits = model.decode(history[:, -1:], enc.memory, enc.src_mask, cache).logits[:, -1]  # (B*K, V)
        top_scores, top_index = best_candidates(scores, logits, 2 * k)
        rows, words, new_scores = [], [], []
        for j, (s_row, i_row) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
            kept = finished[j] if not done[j] else []  # a done sentence's new hypotheses are thrown away
            survivors = _advance(j, kept, s_row, i_row, history, k, logits.size(-1), c.eos_id, step, alpha)
            if not done[j] and step >= max_len[j]:
                for s, beam, word in survivors:
                    tokens = history[j * k + beam, 1:].tolist() + [word]
                    finished[j].append(Hypothesis(tokens, s / length_penalty(step, alpha), s))
            done[j] = done[j] or len(finished[j]) >= k or step >= max_len[j]
            survivors = survivors or [(float("-inf"), 0, c.pad_id)]  # rows kept only to be computed
            survivors += [(float("-inf"), survivors[0][1], survivors[0][2])] * (k - len(survivors))
            for s, beam, word in survivors:
                rows.append(j * k + beam)
                words.append(word)
                new_scores.append(s)
        index = torch.tensor(rows)
        history = torch.cat([history.index_select(0, index), torch.tensor(words)[:, None]], 1)
        cache.reorder(index)  # every sentence stays: the encoder rows never change
        scores = torch.tensor(new_scores).view(b, k)
    return [max(hyps, key=lambda h: h.score) for hyps in finished]


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="runs/multi30k_de_en/best")
parser.add_argument("--rounds", type=int, default=5)
args = parser.parse_args()
model, batches = model_and_batches(args.model, "../shared/data/multi30k/test2016.de")
sentences = sum(len(b) for b in batches)
WAYS = {"leave": beam_search, "all_rows": beam_search_all_rows}
rates, outputs = {way: [] for way in WAYS}, {}
for r in range(args.rounds):
    for way in list(WAYS)[:: 1 if r % 2 == 0 else -1]:
        start = time.perf_counter()
        outputs[way] = [[h.tokens for h in WAYS[way](model, src, 4, 0.6, 50)] for src in batches]
        rates[way].append(sentences / (time.perf_counter() - start))
med = {way: statistics.median(v) for way, v in rates.items()}
print(f"beam 4, sentences/s (threads {torch.get_num_threads()}): finished sentences leave {med['leave']:.1f}, "
      f"all rows kept {med['all_rows']:.1f}: {med['leave'] / med['all_rows']:.3f}x; "
      f"outputs identical: {outputs['leave'] == outputs['all_rows']}")  # fmt: skip
