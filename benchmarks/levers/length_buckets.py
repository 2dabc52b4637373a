"""What batching sentences of similar length gives training (sec 5.1), against batches drawn at random.

    python benchmarks/levers/length_buckets.py [--steps 20] [--rounds 3]   (needs runs/multi30k_de_en/best)

Multi30k train, tokenized with the trained model's BPE, grouped into batches of at most 2,500 padded
tokens per side (the Multi30k config's `max_tokens`) two ways: `token_batches` (sorted by length, what
qkv trains on) and the same packing rule over a random order. Prints the share of each side's padded
slots that are padding, then the training rate of the Multi30k model (small preset, dropout 0.1, the
task's label-smoothed loss, Adam) on batches of each kind, in real (non-padding) tokens per second:
medians of alternating rounds, each `--steps` batches drawn at random from its kind.
"""

import argparse
import random
import statistics
import time

import torch

from qkv.data.batching import pack, token_batches
from qkv.data.padding import pad_sequences
from qkv.data.parallel import read_lines
from qkv.data.subword import PairTokenizer
from qkv.models.seq2seq import PRESETS, EncoderDecoder
from qkv.train.losses import label_smoothed_cross_entropy

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="runs/multi30k_de_en/best", help="where the BPE tokenizer comes from")
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--rounds", type=int, default=3)
args = parser.parse_args()
MAX_TOKENS, PAD, BOS, EOS = 2500, 0, 1, 2
tok = PairTokenizer.load(args.model)
src = tok.encode_src(read_lines("../shared/data/multi30k/train.de"))
tgt = tok.encode_tgt(read_lines("../shared/data/multi30k/train.en"))
lens_s, lens_t = [len(s) + 1 for s in src], [len(t) + 1 for t in tgt]  # with EOS / BOS, as the task pads them


def random_batches(seed: int) -> list[list[int]]:
    """token_batches' packing rule (rows x longest side <= MAX_TOKENS) over a random order."""
    order = list(range(len(src)))
    random.Random(seed).shuffle(order)
    return pack(order, lens_s, lens_t, MAX_TOKENS)


KINDS = {"sorted": token_batches(lens_s, lens_t, MAX_TOKENS), "random": random_batches(0)}
for kind, batches in KINDS.items():
    shares = []
    for lens in (lens_s, lens_t):
        padded = sum(len(b) * max(lens[i] for i in b) for b in batches)
        shares.append(1 - sum(lens) / padded)
    print(f"{kind}: {len(batches)} batches, {len(src) / len(batches):.1f} sentences a batch, padding "
          f"{shares[0]:.1%} of source slots and {shares[1]:.1%} of target slots")  # fmt: skip

torch.manual_seed(0)
model = EncoderDecoder(PRESETS["small"].replace(src_vocab_size=8000, tgt_vocab_size=8000)).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)


def tensors(batch: list[int]):
    s = pad_sequences([src[i] + [EOS] for i in batch], PAD)
    t = pad_sequences([[BOS] + tgt[i] + [EOS] for i in batch], PAD)
    return s, t[:, :-1], t[:, 1:]


def train_rate(kind: str, seed: int) -> float:
    """Real tokens (source + target, no padding) per second over `--steps` random batches of a kind."""
    picks = random.Random(seed).sample(KINDS[kind], args.steps)
    real = sum(lens_s[i] + lens_t[i] for b in picks for i in b)
    data = [tensors(b) for b in picks]
    start = time.perf_counter()
    for s, t_in, t_out in data:
        loss, n = label_smoothed_cross_entropy(model(s, t_in), t_out, 0.1, PAD)
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return real / (time.perf_counter() - start)


train_rate("sorted", 99)  # warm-up: allocator, Adam state
rates = {kind: [] for kind in KINDS}
for r in range(args.rounds):
    for kind in list(KINDS)[:: 1 if r % 2 == 0 else -1]:
        rates[kind].append(train_rate(kind, r))
med = {kind: statistics.median(v) for kind, v in rates.items()}
print(f"training, real tokens/s (threads {torch.get_num_threads()}): sorted {med['sorted']:,.0f}, "
      f"random {med['random']:,.0f}: {med['sorted'] / med['random']:.2f}x")  # fmt: skip
