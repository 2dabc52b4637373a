"""Line and matrix plots that explain pieces of the paper: positional encodings, schedules."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qkv.nn.embeddings import sinusoid_table  # noqa: E402


def plot_positions(path: Path, n_positions: int = 100, d_model: int = 128) -> Path:
    """Left: the encoding matrix PE (sec 3.5). Right: PE PE^T, whose value depends only on the offset
    between positions, the property that lets the model "attend by relative positions"."""
    pe = sinusoid_table(n_positions, d_model)
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    im = a.imshow(pe.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    a.set(title=f"PE, d_model={d_model}: sin on even, cos on odd dimensions", xlabel="dimension", ylabel="position")
    fig.colorbar(im, ax=a)
    im = b.imshow((pe @ pe.T).numpy(), cmap="viridis")
    b.set(title="Dot products between positions", xlabel="position", ylabel="position")
    fig.colorbar(im, ax=b)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_schedule(lrs: list[float], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(range(1, len(lrs) + 1), lrs)
    ax.set(title=title, xlabel="step", ylabel="learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
