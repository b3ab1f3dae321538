"""Report figures, drawn with matplotlib's Agg canvas: every function takes tensors/dicts and returns a Figure.

Figures are built with `matplotlib.figure.Figure`, not pyplot, so nothing is kept in pyplot's global figure list
and no display backend is ever needed; `save_png` writes one atomically.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import io
from .errors import PipelineError

# One fixed colour per digit, shared by every panel that colours by class.
DIGIT_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]


def _figure(width: float, height: float, **kwargs: Any) -> Figure:
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _pixels(x: Any) -> np.ndarray:
    """Images as float32 in [0, 1], whatever the input: uint8 (0-255) or float, tensor or array."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)


def _image(x: Any) -> np.ndarray:
    """One image as a 2-D array for imshow, from (28, 28) or (1, 28, 28) input."""
    a = _pixels(x)
    return a.reshape(a.shape[-2:])


def _show(ax, img: Any, title: str | None = None, **kwargs: Any) -> None:
    ax.imshow(_image(img), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)


def _grid(fig: Figure, n: int, cols: int) -> list:
    """`n` axes in a grid of `cols` columns; the unused cells of the last row are removed."""
    rows = max(1, math.ceil(n / cols))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def save_png(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> None:
    """Write `fig` as a PNG atomically, then close it (also when writing fails)."""
    try:
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)  # only matters for a figure a caller made with pyplot
        fig.clear()


def label_distribution(y: Any, *, title: str = "Training labels") -> Figure:
    """Bar chart of how many images each digit has, with the count on each bar."""
    counts = np.bincount(np.asarray(y).ravel().astype(np.int64), minlength=10)[:10]
    fig = _figure(7, 3.5, layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(range(10), counts, color=DIGIT_COLORS)
    ax.bar_label(bars, fontsize=8)
    ax.set_xticks(range(10))
    ax.set_xlabel("digit")
    ax.set_ylabel("images")
    ax.set_title(f"{title} ({int(counts.sum())} images)")
    ax.margins(y=0.12)
    return fig


def sample_grid(x: Any, y: Any, *, cols: int = 10, title: str = "Sample images") -> Figure:
    """The images `x` in a grid, each titled with its label from `y`."""
    n = len(x)
    rows = max(1, math.ceil(n / cols))
    fig = _figure(1.0 * min(cols, max(n, 1)), 1.1 * rows + 0.4, layout="constrained")
    for ax, img, label in zip(_grid(fig, n, cols), x, np.asarray(y).ravel(), strict=True):
        _show(ax, img, f"label {int(label)}")
    fig.suptitle(title)
    return fig


@torch.no_grad()
def feature_maps(model: torch.nn.Module, image: Any, *, block: int, label: int | None = None,
                 max_maps: int = 32, cols: int = 8) -> Figure:
    """The input digit next to the `max_maps` most active feature maps of conv block `block` (1-based).

    The model's `features(x)` gives each block's output after pooling; maps are ranked by mean activation so
    that the figure shows channels that respond to this digit rather than the first few, which may be dead.
    """
    img = _image(image)
    x = torch.from_numpy(img).reshape(1, 1, *img.shape)
    maps = model.eval().features(x.to(next(model.parameters()).device))
    if not 1 <= block <= len(maps):
        raise PipelineError(f"cannot draw conv block {block}: the model has {len(maps)} conv block(s); "
                            "give the CNN more entries in its recipe's channels")
    fmap = maps[block - 1][0].float().cpu()
    order = fmap.mean((1, 2)).argsort(descending=True)[:max_maps].tolist()
    rows = max(1, math.ceil(len(order) / cols))
    fig = _figure(2.2 + 1.1 * cols, 1.15 * rows + 0.6, layout="constrained")
    gs = fig.add_gridspec(rows, cols + 2)
    _show(fig.add_subplot(gs[:, :2]), image, "input" + (f" (label {label})" if label is not None else ""))
    for k, c in enumerate(order):
        ax = fig.add_subplot(gs[k // cols, 2 + k % cols])
        ax.imshow(fmap[c].numpy(), cmap="viridis", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"ch {c}", fontsize=7)
    side = fmap.shape[-1]
    fig.suptitle(f"Conv block {block}: {len(order)} of {fmap.shape[0]} feature maps ({side}x{side}), "
                 "most active first, each on its own colour scale")
    return fig


def misclassified(x: Any, items: Sequence[Mapping[str, Any]], *, cols: int = 8,
                  title: str = "Most confident errors") -> Figure:
    """The wrongly classified images listed in `items` ({index, true, pred, confidence}) drawn from `x`."""
    n = len(items)
    if n == 0:
        fig = _figure(4, 1.5, layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return fig
    rows = math.ceil(n / cols)
    fig = _figure(1.2 * min(cols, n), 1.35 * rows + 0.4, layout="constrained")
    for ax, it in zip(_grid(fig, n, cols), items, strict=True):
        _show(ax, x[int(it["index"])], f"{it['true']}\u2192{it['pred']} ({100 * it['confidence']:.0f}%)")
    fig.suptitle(f"{title} (true\u2192predicted, confidence)")
    return fig


def noisy_example(clean: Any, noisy: Any, *, label: int | None = None, psnr_db: float | None = None) -> Figure:
    """One digit before and after adding noise."""
    fig = _figure(5, 2.8, layout="constrained")
    a, b = fig.subplots(1, 2)
    _show(a, clean, "clean")
    _show(b, noisy, "noisy" + (f" (PSNR {psnr_db:.1f} dB)" if psnr_db is not None else ""))
    if label is not None:
        fig.suptitle(f"Digit {label}")
    return fig


def denoising_grid(rows: Mapping[str, Any], *, labels: Any = None) -> Figure:
    """One row per image set (e.g. original, noisy, denoised), the same images in each column."""
    names = list(rows)
    n = len(rows[names[0]])
    fig = _figure(1.1 * n + 0.8, 1.15 * len(names) + 0.3, layout="constrained")
    axes = fig.subplots(len(names), n, squeeze=False)
    for r, name in enumerate(names):
        for c in range(n):
            title = f"label {int(labels[c])}" if labels is not None and r == 0 else None
            _show(axes[r, c], rows[name][c], title)
        axes[r, 0].set_ylabel(name)
    return fig


def tsne_embed(x: Any, *, perplexity: float, seed: int, max_iter: int = 500, n_jobs: int | None = None) -> np.ndarray:
    """2-D t-SNE embedding (N, 2) of images (flattened pixels).

    The same input, seed and `n_jobs` give the same output. Another thread count can give a different
    embedding (it does on some CPUs), so callers whose output must not depend on the machine pass `n_jobs`
    explicitly; the default, every core this process may use, suits timing runs only. 500 iterations (250 of
    them early exaggeration) rather than sklearn's 1000: the clusters are settled by then, and it halves the
    time. Two threads take 10k images from 38 s to 22 s on a 2-core machine.
    """
    from sklearn.manifold import TSNE  # imported here: sklearn's manifold module is slow to import
    from threadpoolctl import threadpool_limits  # installed with scikit-learn, which uses it itself

    a = _pixels(x).reshape(len(x), -1)
    if not 0 < perplexity < len(a):
        raise PipelineError(f"t-SNE perplexity {perplexity} must be between 0 and the number of images ({len(a)}); "
                            "lower the perplexity or embed more images")
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=max_iter,
                random_state=seed, n_jobs=n_jobs)
    # sklearn's gradient takes its thread count from the OpenMP limit, which threadpoolctl sets.
    with threadpool_limits(limits=n_jobs):
        return tsne.fit_transform(a)


def tsne_figure(embeddings: Mapping[str, np.ndarray], labels: Any, *,
                title: str = "t-SNE of test images (pixels), coloured by true digit") -> Figure:
    """One scatter panel per image set, all coloured by digit with the same colours and one shared legend."""
    y = np.asarray(labels).ravel().astype(np.int64)
    fig = _figure(4.2 * len(embeddings) + 1.0, 4.4, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(embeddings), squeeze=False)).ravel()
    for ax, (name, emb) in zip(axes, embeddings.items(), strict=True):
        for d in range(10):
            pts = emb[y[: len(emb)] == d]
            ax.scatter(pts[:, 0], pts[:, 1], s=3, color=DIGIT_COLORS[d], label=str(d), rasterized=True)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [axes[0].scatter([], [], s=25, color=DIGIT_COLORS[d], label=str(d)) for d in range(10)]
    fig.legend(handles=handles, loc="outside right center", title="digit", frameon=False)
    fig.suptitle(title)
    return fig


def comparison(results: Mapping[str, Mapping[str, Any]], *, reference: Mapping[str, float] | None = None,
               reference_label: str = "clean-trained model", xlabel: str = "training and test images") -> Figure:
    """Accuracy and training time per model, side by side.

    `results` maps a model label to {"accuracy": float, "seconds": {part: float}}; the parts of a model's
    training time (e.g. the CNN and the denoiser it depends on) are stacked. `reference` optionally maps some
    labels to another accuracy on the same test set (e.g. the clean-trained model), drawn as a marker.
    """
    names = list(results)
    pos = np.arange(len(names))
    fig = _figure(3.0 + 2.2 * len(names), 4.0, layout="constrained")
    ax_acc, ax_t = fig.subplots(1, 2)
    acc = np.array([float(results[n]["accuracy"]) for n in names])
    bars = ax_acc.bar(pos, 100 * acc, color="#4c72b0", width=0.6)
    ax_acc.bar_label(bars, labels=[f"{100 * a:.2f}%" for a in acc], fontsize=8)
    # Accuracies of MNIST models sit within a few points of each other; a zero-based axis would hide that.
    low = max(0.0, float(min(100 * acc)) - 3.0)
    if reference:
        ref = [(i, 100 * float(reference[n])) for i, n in enumerate(names) if n in reference]
        # A reference far below the bars (a clean model on noisy digits) is pinned to the axis and labelled.
        shown = [max(v, low + 0.3) for _, v in ref]
        ax_acc.scatter([i for i, _ in ref], shown, marker="D", color="#c44e52", zorder=3, label=reference_label)
        for (i, v), y in zip(ref, shown, strict=True):
            ax_acc.annotate(f"{v:.2f}%", (i, y), xytext=(8, -3), textcoords="offset points", fontsize=8,
                            color="#c44e52")
        ax_acc.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    ax_acc.set_ylim(low, 100.0 + 0.6)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("Accuracy on its own test set")
    bottom = np.zeros(len(names))
    parts = list(dict.fromkeys(p for n in names for p in results[n]["seconds"]))
    for k, part in enumerate(parts):
        vals = np.array([float(results[n]["seconds"].get(part, 0.0)) for n in names])
        ax_t.bar(pos, vals, bottom=bottom, width=0.6, label=part, color=DIGIT_COLORS[k % 10])
        bottom += vals
    ax_t.bar_label(ax_t.containers[-1], labels=[f"{b:.0f} s" for b in bottom], fontsize=8)
    ax_t.set_ylabel("training time (s)")
    ax_t.set_title("Training time")
    ax_t.margins(y=0.12)
    if len(parts) > 1:
        ax_t.legend(fontsize=8)
    for ax in (ax_acc, ax_t):
        ax.set_xticks(pos, names)
        ax.set_xlabel(xlabel)
    return fig


def confusion_matrices(confusions: Mapping[str, Any], *, cols: int = 3) -> Figure:
    """One 10x10 confusion matrix per model with the count in every non-empty cell.

    Cells are shaded by the fraction of each true digit (row) so that the off-diagonal errors stay visible
    next to the large diagonal counts.
    """
    n = len(confusions)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig = _figure(4.6 * cols, 4.6 * rows, layout="constrained")
    for ax, (name, cm) in zip(_grid(fig, n, cols), confusions.items(), strict=True):
        cm = np.asarray(cm, dtype=np.int64)
        frac = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(np.sqrt(frac), cmap="Blues", vmin=0.0, vmax=1.0)
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                        color="white" if frac[i, j] > 0.5 else "black")
        acc = np.trace(cm) / max(cm.sum(), 1)
        ax.set_title(f"{name} (accuracy {100 * acc:.2f}%)", fontsize=10)
        ax.set_xticks(range(10))
        ax.set_yticks(range(10))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    return fig

