"""What labelling only the outer panels gives `qkv plot attention`, against a label on every panel.

    python benchmarks/levers/plot_grid.py [--rounds 3]

`qkv.viz.heatmap.attention_grid` (tokens on the left column and the bottom row only, 0.25 inch a
token) against the grid it replaced (every panel with its own row and column tokens, 0.32 inch a
token), kept below as it was. Random attention weights at the shapes a user meets: the trained
Multi30k model (3 layers x 8 heads) on a 16-token sentence, the paper's base shape (6 x 8) on 20
tokens, and a 2 x 4 model on 52 tokens (an untrained model that decodes to its length limit). Prints
the median seconds of alternating rounds and the image size of each.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image

from qkv.viz.heatmap import attention_grid


def every_panel_labelled(weights, rows, cols, path, title, head_titles, ncols):
    """The grid before session 19: each panel labels its own rows and columns."""
    n = weights.size(0)
    nrows = (n + ncols - 1) // ncols
    scale = max(0.32 * max(len(cols), len(rows)), 3.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.imshow(weights[i].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_title(head_titles[i], fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--rounds", type=int, default=3)
args = parser.parse_args()

torch.manual_seed(0)
out = Path(tempfile.mkdtemp())
for layers, heads, tokens in ((3, 8, 17), (6, 8, 20), (2, 4, 52)):
    weights = torch.softmax(torch.randn(layers * heads, tokens, tokens), -1)
    labels = [f"tok{i}" for i in range(tokens)]
    titles = [f"layer {i // heads + 1}, head {i % heads + 1}" for i in range(layers * heads)]
    times = {"outer_labels": [], "every_panel": []}
    for _ in range(args.rounds):
        for name, fn in (("outer_labels", attention_grid), ("every_panel", every_panel_labelled)):
            start = time.perf_counter()
            fn(weights, labels, labels, out / f"{name}.png", "attention", titles, ncols=heads)
            times[name].append(time.perf_counter() - start)
    new, old = (statistics.median(times[k]) for k in ("outer_labels", "every_panel"))
    sizes = {k: Image.open(out / f"{k}.png").size for k in times}
    print(
        f"{layers} x {heads} panels, {tokens} tokens: outer labels {new:.2f} s {sizes['outer_labels']}, "
        f"every panel {old:.2f} s {sizes['every_panel']}: {old / new:.2f}x"
    )
