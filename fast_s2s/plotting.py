"""Attention heat maps, as in the classic seq2seq visualisations (Bahdanau et al. 2014, Fig. 3)."""

from __future__ import annotations

import os

import torch


def plot_attention(
    weights: torch.Tensor,
    source_tokens: list[str],
    output_tokens: list[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> None:
    """Save a heat map of `weights` (len(output_tokens), len(source_tokens)) to a PNG.

    Source tokens run along the x axis, output tokens down the y axis; darker is more weight.
    """
    try:
        import matplotlib
    except ImportError as exc:  # an optional dependency: say how to get it
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    w = weights.detach().float().cpu().numpy()
    if w.shape != (len(output_tokens), len(source_tokens)):
        raise ValueError(
            f"weights must have shape (outputs, sources) = ({len(output_tokens)}, "
            f"{len(source_tokens)}), got {tuple(w.shape)}"
        )
    show = [t if t != " " else "␣" for t in source_tokens]
    fig_w = max(4.0, 0.32 * len(show) + 1.5)
    fig_h = max(3.0, 0.32 * len(output_tokens) + 1.2)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.imshow(w, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(show)), show, rotation=90 if max(map(len, show), default=1) > 2 else 0)
    ax.set_yticks(range(len(output_tokens)), output_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
