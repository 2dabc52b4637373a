"""Translation decoding speed: qkv against `transformers` `generate` on the same weights.

    python benchmarks/decoding.py --model runs/multi30k_de_en/best [--beams 1,4]

The trained qkv model is exported to the Marian layout (`qkv.convert.marian`, an exact conversion)
and both decode the same batches of 64 Multi30k test2016 sources (sorted by length), greedy and beam 4
(alpha 0.6; a sentence is done once 4 hypotheses have ended and no live beam, ending now, would rank
among them: `transformers`' `early_stopping=False`, qkv's rule; at most source length + 50 tokens).
Sentences/s. The two length penalties differ (qkv GNMT's ((5 + |Y|) / 6)^alpha, `transformers` |Y|^alpha),
so beam outputs can differ where greedy's do not. qkv decodes a round's batches inside one
`packed_weights()` block, as `qkv translate` does a file's: its weights are packed for oneDNN once a
round (about 11 ms), not once a batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import alternate, device_argument, report, timed  # noqa: E402

from qkv.checkpoint import load  # noqa: E402
from qkv.convert.marian import to_marian  # noqa: E402
from qkv.data.padding import pad_sequences  # noqa: E402
from qkv.data.parallel import read_lines  # noqa: E402
from qkv.data.subword import PairTokenizer  # noqa: E402
from qkv.decoding.translate import translate_ids  # noqa: E402
from qkv.nn.weight_copies import packed_weights  # noqa: E402


def beam_sizes(text: str) -> tuple[int, ...]:
    """ "1,4" -> (1, 4): positive beam sizes, for --beams."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of beam sizes") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"beam sizes must be 1 or more, not {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/multi30k_de_en/best")
    parser.add_argument("--src", default="../shared/data/multi30k/test2016.de")
    parser.add_argument("--sentences", type=int, default=512)
    # five alternating rounds, the median of each side: with two, single runs moved 10% (mostly the
    # reference's rate), about 30 s more per run
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median of each is reported")
    parser.add_argument(
        "--beams",
        type=beam_sizes,
        default=(1, 4),
        help="comma-separated beam sizes to time, 1 being greedy (default: 1,4); `make bench` runs greedy "
        "in three processes (benchmarks/processes.py) and beam 4 in one",
    )
    device_argument(parser)
    args = parser.parse_args()
    import transformers

    if not (Path(args.model) / "model.safetensors").is_file():
        print(
            f'{{"benchmark": "translation_decoding", "skipped": "no trained model at {args.model}; '
            f'make one with: qkv train configs/multi30k_de_en.toml"}}'
        )
        return
    model = load(args.model).to(args.device)
    tok = PairTokenizer.load(args.model)
    ids = tok.encode_src(read_lines(args.src)[: args.sentences])
    ids.sort(key=len)
    batches = [ids[i : i + 64] for i in range(0, len(ids), 64)]
    c = model.config
    with tempfile.TemporaryDirectory() as d:
        to_marian(model, d)
        hf = transformers.MarianMTModel.from_pretrained(d).eval().to(args.device)

    def ours(beam):
        def run():
            # one block for all the batches, as `translate_lines` (`qkv translate`) opens one for a file:
            # each weight is packed for oneDNN once a round, not once a batch (qkv.nn.linear)
            with packed_weights():
                for b in batches:
                    translate_ids(model, b, beam)

        return lambda: len(ids) / timed(run)

    def hf_batch(b, beam) -> torch.Tensor:
        src = pad_sequences([x + [c.eos_id] for x in b], c.pad_id).to(args.device)
        return hf.generate(
            src,
            attention_mask=(src != c.pad_id).long(),
            num_beams=beam,
            do_sample=False,
            max_new_tokens=src.size(1) + 50,
            # beam-only options only with beams (`transformers` warns that greedy ignores them)
            **({"early_stopping": False, "length_penalty": 0.6} if beam > 1 else {}),
        )  # (B, 1 + L): the start token, the output, EOS, then padding

    def theirs(beam):
        def run():
            with torch.inference_mode():
                for b in batches:
                    hf_batch(b, beam)

        return lambda: len(ids) / timed(run)

    def identical(beam) -> float:
        """The share of sentences both sides translate to the same tokens (untimed). Greedy: all but a
        sentence that never ends, which qkv cuts at its own source length + 51 tokens and `transformers`
        at the longest in its batch + 51. Beam search: fewer, since `transformers` divides a hypothesis'
        log-probability by length^0.6 and qkv by GNMT's ((5 + length) / 6)^0.6 (the paper's alpha)."""
        same = 0
        with torch.inference_mode():
            for b in batches:
                for ours_row, row in zip(translate_ids(model, b, beam), hf_batch(b, beam).tolist()):
                    row = row[1:]
                    same += ours_row == (row[: row.index(c.eos_id)] if c.eos_id in row else row)
        return round(same / len(ids), 4)

    for beam in args.beams:
        rates = alternate({"qkv": ours(beam), "hf_generate": theirs(beam)}, args.rounds)
        report(
            f"translation_decoding_sentences_per_s[beam {beam}]",
            "sentences/s",
            rates,
            "hf_generate",
            dtype="float32",
            batch=64,
            sentences=len(ids),
            outputs_identical=identical(beam),
            model=args.model,
        )


if __name__ == "__main__":
    main()
