"""How often the speculative draft (`qkv.decoding.speculative`: the model's layers in 8-bit integers)
guesses a trained model's greedy token on real text: what speculation is worth beyond the random
models of `make bench`, whose tied embeddings make them mostly repeat tokens.

    python benchmarks/levers/draft_acceptance.py CHECKPOINT TEXT [--prompts 8] [--tokens 128]

e.g. a character model from `qkv train configs/shakespeare_char_best.toml` and Tiny Shakespeare's last
tenth (held out by that config). Two figures:
1. Agreement under teacher forcing: over --positions positions of the text's last tenth, the share
   where the model with its layers' weights rounded as the draft rounds them (row by row to 8 bits)
   and the float32 model pick the same next token.
2. Greedy generation from --prompts prompts (64 tokens each, from the same part of the text): tokens
   a float32 check kept on average, the share of drafted tokens kept, and whether the tokens equal
   plain greedy decoding's. The integer routes are forced on whatever the model's size (a character
   model's output layer is far below the size where `generate` uses them).
"""

import argparse
import copy as copy_module
import sys
from pathlib import Path

import torch

import qkv.decoding.argmax as argmax
import qkv.decoding.speculative as speculative
import qkv.nn.linear as qlinear
from qkv.checkpoint import load
from qkv.data.tokenizers import load_tokenizer
from qkv.decoding.generate import generate
from qkv.nn import native


def rounded_copy(model):
    """The model with each layer's matrix replaced by its row-by-row 8-bit rounding (`quantize_rows`),
    as the draft's products use it; the output layer stays (the draft scores with the float32 one's
    integer form, whose argmax is the float32 one's)."""
    copy = copy_module.deepcopy(model)
    with torch.no_grad():
        for name, p in copy.blocks.named_parameters():
            if p.dim() == 2 and p.numel() >= qlinear.MIN_DRAFT:
                q, s = native.kernel("quantize_rows")(p)
                p.copy_(q.float() * s[:, None])
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a GPT checkpoint directory (with its tokenizer)")
    parser.add_argument("text", help="a UTF-8 text file; its last tenth is used")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--positions", type=int, default=4096)
    args = parser.parse_args()
    if native.kernel("draft_matvec") is None:
        sys.exit("qkv's kernels did not build: there is no draft here")
    model = load(args.checkpoint).eval()
    if model.family != "gpt":
        sys.exit(f"{args.checkpoint}: a {model.family} model; this needs a gpt one")
    text = Path(args.text).read_text(encoding="utf-8")
    ids = load_tokenizer(args.checkpoint).encode(text[len(text) * 9 // 10 :])
    block = model.config.block_size

    # 1. teacher forcing, windows of the context length
    draft_model = rounded_copy(model)
    same = total = 0
    with torch.inference_mode():
        for start in range(0, min(args.positions, len(ids) - block), block):
            window = torch.tensor([ids[start : start + block]])
            same += int((model(window).logits.argmax(-1) == draft_model(window).logits.argmax(-1)).sum())
            total += window.numel()
    print(f"teacher forcing: the draft's next token is the float32 one at {same / total:.1%} of {total} positions")

    # 2. generation, the integer routes forced on
    real_products, real_min = argmax.integer_products, argmax.MIN_SCREENED
    argmax.integer_products, argmax.MIN_SCREENED = (lambda: True), 0
    saved_draft, qlinear.MIN_DRAFT = qlinear.MIN_DRAFT, 0
    rounds, real = [], speculative._checked

    def checked(steps, tokens, offset, integer):
        out = real(steps, tokens, offset, integer)
        rounds.append((len(tokens) - 1, next((i for i, t in enumerate(tokens[1:]) if t != out[i]), len(tokens) - 1)))
        return out

    speculative._checked = checked
    try:
        agree = True
        step = max(1, (len(ids) - 64) // args.prompts)
        for k in range(args.prompts):
            prompt = ids[k * step : k * step + 64]
            out = list(generate(model, prompt, args.tokens, temperature=0.0))
            agree &= out == list(generate(model, prompt, args.tokens, temperature=0.0, speculate=False))
    finally:
        speculative._checked = real
        argmax.integer_products, argmax.MIN_SCREENED, qlinear.MIN_DRAFT = real_products, real_min, saved_draft
    drafted, kept = sum(r[0] for r in rounds), sum(r[1] for r in rounds)
    print(
        f"generation: {args.prompts} prompts x {args.tokens} tokens; {len(rounds)} checks gave "
        f"{(kept + len(rounds)) / len(rounds):.2f} tokens each; {kept} of {drafted} drafted tokens kept "
        f"({kept / drafted:.1%}); "
        f"the same tokens as plain greedy: {agree}"
    )


if __name__ == "__main__":
    main()
