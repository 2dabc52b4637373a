"""What batching sentences of similar length gives `qkv classify`, against batches in file order.

    python benchmarks/levers/classify_batches.py [--rounds 5] [--data ../shared/data/sst2]

SST-2's 872 dev sentences through a random bert-small classifier of the SST-2 config's shape (4 layers,
width 256, 64 positions) with a WordPiece vocabulary of 8,000 trained on SST-2 train, batches of 64:
`predict` (what `qkv classify` runs: sorted by length, results put back in order) against the same
forward passes over the sentences in file order. The labels must be the same and the probabilities
within 1e-5. Prints the median seconds of alternating rounds and the padding share of each.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from qkv.commands.classify import predict
from qkv.data.padding import pad_sequences
from qkv.data.wordpiece import WordPieceTokenizer
from qkv.models.bert import PRESETS, Bert
from qkv.tasks.bert import read_tsv

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--data", default="../shared/data/sst2", help="directory with train.tsv and dev.tsv")
args = parser.parse_args()

tok = WordPieceTokenizer.train(read_tsv(str(Path(args.data) / "train.tsv"))[0], 8000)
torch.manual_seed(0)
config = PRESETS["bert-small"].replace(
    vocab_size=tok.vocab_size, max_len=64, head="sequence_classification", n_labels=2, dropout=0.0
)
model = Bert(config).eval()
sentences = read_tsv(str(Path(args.data) / "dev.tsv"))[0]
BATCH, LIMIT = 64, config.max_len - 2


def file_order() -> list[tuple[int, float]]:
    """The forward passes of `predict`, over batches of consecutive sentences."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(sentences), BATCH):
            ids = [[tok.cls_id, *x[:LIMIT], tok.sep_id] for x in tok.encode_batch(sentences[i : i + BATCH])]
            probs = model(pad_sequences(ids, tok.pad_id)).logits.softmax(-1)  # (B, 2)
            out += [(int(label), float(p)) for p, label in zip(*probs.max(-1))]
    return out


def padding_share(order: list[int]) -> float:
    lengths = [min(len(x), LIMIT) + 2 for x in tok.encode_batch(sentences)]
    batches = [[lengths[i] for i in order[s : s + BATCH]] for s in range(0, len(order), BATCH)]
    slots = sum(len(b) * max(b) for b in batches)
    return 1 - sum(lengths) / slots


a, b = file_order(), predict(model, tok, sentences, BATCH)
if [x[0] for x in a] != [x[0] for x in b] or max(abs(x[1] - y[1]) for x, y in zip(a, b)) > 1e-5:
    sys.exit("the two orders disagree")
times: dict[str, list[float]] = {"file order": [], "sorted (qkv classify)": []}
runs = {"file order": file_order, "sorted (qkv classify)": lambda: predict(model, tok, sentences, BATCH)}
for r in range(args.rounds):
    for name in list(runs) if r % 2 == 0 else reversed(list(runs)):
        start = time.perf_counter()
        runs[name]()
        times[name].append(time.perf_counter() - start)
lengths = [len(x) for x in tok.encode_batch(sentences)]
shares = {"file order": padding_share(list(range(len(sentences)))),
          "sorted (qkv classify)": padding_share(sorted(range(len(sentences)), key=lambda i: lengths[i]))}  # fmt: skip
for name, t in times.items():
    print(f"{name}: {statistics.median(t):.3f} s for {len(sentences)} sentences, {shares[name]:.1%} of slots padding")
first, second = (statistics.median(t) for t in times.values())
print(f"sorted is {first / second:.2f}x the file order ({torch.get_num_threads()} threads, {args.rounds} rounds)")
