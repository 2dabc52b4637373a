"""Small GPT (4 x 128, vocab 65) generation at 1 and 2 threads: qkv cached, qkv uncached, HF generate."""

import sys
import time

import torch

sys.path.insert(0, "benchmarks")  # run from the repository root
from gpt import pair

from qkv.decoding.generate import generate

hf, ours = pair(4, 4, 128, 65, 512)
hf.eval()
hf.generation_config.eos_token_id = None
prompt = torch.randint(0, 65, (1, 16), generator=torch.Generator().manual_seed(1))


def q(uc):
    t = time.perf_counter()
    list(generate(ours, prompt[0].tolist(), 256, temperature=0.0, use_cache=uc))
    return 256 / (time.perf_counter() - t)


def h():
    with torch.inference_mode():
        t = time.perf_counter()
        hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=256, do_sample=False, pad_token_id=0)
        return 256 / (time.perf_counter() - t)


for th in (2, 1, 2, 1):
    torch.set_num_threads(th)
    r = {"cached": [], "uncached": [], "hf": []}
    for _ in range(3):
        r["cached"].append(q(True))
        r["uncached"].append(q(False))
        r["hf"].append(h())
    print(th, {k: round(sorted(v)[1]) for k, v in r.items()}, flush=True)
