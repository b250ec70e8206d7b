"""Attention heat maps, as in the classic seq2seq visualisations (Bahdanau et al. 2014, Fig. 3)."""

from __future__ import annotations

import importlib.util
import math
import os

import torch

_MAX_TICKS = 60
MISSING_MATPLOTLIB = "plotting needs matplotlib: pip install matplotlib"


def plotting_unavailable() -> str | None:
    """None when the plots can be drawn, else what to install (checked before any work)."""
    return None if importlib.util.find_spec("matplotlib") is not None else MISSING_MATPLOTLIB


def plot_attention(
    weights: torch.Tensor,
    source_tokens: list[str],
    output_tokens: list[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> None:
    """Save a heat map of `weights` (len(output_tokens), len(source_tokens)) to a PNG.

    Source tokens run along the x axis, output tokens down the y axis; darker is more weight.
    Sources longer than 60 tokens (frames) label every k-th column only.
    """
    try:
        import matplotlib
    except ImportError as exc:  # an optional dependency: say how to get it
        raise RuntimeError(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    w = weights.detach().float().cpu().numpy()
    if w.shape != (len(output_tokens), len(source_tokens)):
        raise ValueError(
            f"weights must have shape (outputs, sources) = ({len(output_tokens)}, "
            f"{len(source_tokens)}), got {tuple(w.shape)}"
        )
    show = [t if t != " " else "␣" for t in source_tokens]
    # Long sources (frames) keep a readable width: at most _MAX_TICKS labelled columns.
    every = max(1, math.ceil(len(show) / _MAX_TICKS))
    fig_w = max(4.0, 0.32 * min(len(show), _MAX_TICKS) + 1.5)
    fig_h = max(3.0, 0.32 * len(output_tokens) + 1.2)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.imshow(w, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ticks = range(0, len(show), every)
    labels = [show[i] for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90 if max(map(len, labels), default=1) > 2 else 0)
    ax.set_yticks(range(len(output_tokens)), output_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_length_curves(results: dict, path: str | os.PathLike) -> None:
    """Save the bottleneck experiment's plot (fast_s2s.experiment): exact match (left) and token
    accuracy (right) against source length, one line per model, one point per length bucket.
    The local-attention models are dashed."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = results.get("settings", {}).get("window", 10)
    styles = {"classic": ("tab:red", "s", "classic (no attention)"),
              "attention": ("tab:blue", "o", "global attention (Bahdanau)"),
              "luong": ("tab:purple", "D", "global attention (Luong general)"),
              "local_p": ("tab:green", "^", f"local-p (Luong general, D={window})"),
              "local_m": ("tab:olive", "v", f"local-m (Luong general, D={window})")}  # fmt: skip
    extra_rows = (
        max(0, math.ceil(len(results["models"]) / 2) - 1) if len(results["models"]) > 3 else 0
    )
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.7 + 0.25 * extra_rows), sharey=True)
    for ax, metric, label in zip(
        axes, ("exact", "token_accuracy"), ("exact match", "token accuracy"), strict=True
    ):
        for name, stats in results["models"].items():
            color, marker, legend = styles.get(name, (None, "o", name))
            rows = stats["buckets"]
            x = [(r["low"] + r["high"]) / 2 for r in rows]
            line = "--" if name.startswith("local") else "-"
            ax.plot(
                x, [100 * r[metric] for r in rows], line, marker=marker, color=color, label=legend
            )
        rows = next(iter(results["models"].values()))["buckets"]
        ax.set_xticks([(r["low"] + r["high"]) / 2 for r in rows], [r["lengths"] for r in rows])
        ax.set_xlabel("source length (symbols)")
        ax.set_ylabel(f"{label} (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    ncol = len(labels) if len(labels) <= 3 else 2  # more series: two columns of legend
    legend_rows = math.ceil(len(labels) / ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    settings = results.get("settings", {})
    budget = settings.get("steps")
    budget = f"{budget} steps" if budget else f"{settings.get('seconds', '?')} s"
    fig.suptitle(
        f"reverse task, same sizes (hidden {settings.get('hidden_size', '?')}) and budget "
        f"({budget}) for every model",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.02 + 0.055 * legend_rows, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_time_to_accuracy(
    curve: list[tuple[float, float]],
    path: str | os.PathLike,
    peer: tuple[str, float, float] | None = None,
    title: str = "g2p: validation WER against training time",
) -> None:
    """Save validation WER (fraction) against training seconds, one point per epoch
    (`curve`: (seconds, wer) pairs), and a peer's point (name, training seconds, WER on the
    same words) with a dashed line at its WER, so where the curve crosses it reads off."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    seconds, wers = zip(*curve, strict=True) if curve else ((), ())
    ax.plot(seconds, [100 * w for w in wers], "-o", color="tab:blue", label="fast_s2s (per epoch)")
    if peer is not None:
        name, peer_seconds, peer_wer = peer
        ax.axhline(100 * peer_wer, color="tab:red", linestyle="--", linewidth=1)
        ax.plot([peer_seconds], [100 * peer_wer], "*", color="tab:red", markersize=14,
                label=f"{name} ({peer_seconds:,.0f} s, {100 * peer_wer:.2f}%)")  # fmt: skip
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation WER (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
