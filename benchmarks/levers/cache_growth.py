"""What the KV cache's preallocated, doubling buffers give, against concatenating every step (session 14).

    python benchmarks/levers/cache_growth.py [--rounds 5]     (decoding needs runs/multi30k_de_en/best)

`LayerCache.append` writes each step's keys and values into buffers with spare room that double when
full, so most steps allocate nothing. The alternative measured here (patched in for the run only)
is what a cache written the simple way does: `torch.cat` of the old keys/values and the new ones, a
new tensor of the whole history every step. Medians of alternating rounds, outputs compared:
1. batch-1 generation of the small GPT of the suite (4 x 128, context 512), 256 tokens after 16, greedy;
2. greedy and beam-4 decoding with the trained de->en model, 512 test2016 sentences in batches of 64.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from test2016 import model_and_batches

from qkv.decoding.beam import beam_search
from qkv.decoding.generate import generate
from qkv.decoding.greedy import greedy_decode
from qkv.models.gpt import GPT, GPTConfig
from qkv.nn.cache import LayerCache

DOUBLING = LayerCache.append


def concatenating(self, k, v):
    """The whole history copied into a new tensor each step; the buffers hold exactly `length` positions."""
    if self.k is None:
        self.k, self.v = k, v
    else:
        self.k = torch.cat([self.k[:, :, : self.length], k], dim=2)
        self.v = torch.cat([self.v[:, :, : self.length], v], dim=2)
    self.length += k.size(2)
    return self.k, self.v


def compare(title: str, unit: str, work, amount: int, rounds: int) -> None:
    """work() -> outputs; rate = amount / seconds, for each way of appending, alternating."""
    rates, outputs = {"doubling": [], "concatenating": []}, {}
    for r in range(rounds):
        for name in list(rates)[:: 1 if r % 2 == 0 else -1]:
            LayerCache.append = DOUBLING if name == "doubling" else concatenating
            start = time.perf_counter()
            outputs[name] = work()
            rates[name].append(amount / (time.perf_counter() - start))
    LayerCache.append = DOUBLING
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"{title}, {unit}: doubling {med['doubling']:,.1f}, concatenating {med['concatenating']:,.1f}: "
          f"{med['doubling'] / med['concatenating']:.3f}x; outputs identical: "
          f"{outputs['doubling'] == outputs['concatenating']}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="runs/multi30k_de_en/best")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=65, block_size=512, d_model=128, n_heads=4, n_layers=4, d_ff=512)).eval()
    prompt = torch.randint(0, 65, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    compare("small GPT, 256 tokens", "tokens/s", lambda: list(generate(gpt, prompt, 256, 0.0)), 256, 3 * args.rounds)
    if (Path(args.model) / "model.safetensors").is_file():
        model, batches = model_and_batches(args.model, "../shared/data/multi30k/test2016.de")
        sentences = sum(len(b) for b in batches)
        greedy = [lambda b=b: greedy_decode(model, b, b.size(1) + 50).tolist() for b in batches]
        beam = [lambda b=b: [h.tokens for h in beam_search(model, b, 4, 0.6, 50)] for b in batches]
        compare("greedy decoding", "sentences/s", lambda: [f() for f in greedy], sentences, args.rounds)
        compare("beam 4 decoding", "sentences/s", lambda: [f() for f in beam], sentences, args.rounds)
