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

from . import io, noise
from .errors import PipelineError

# One fixed colour per digit, shared by every panel that colours by class.
DIGIT_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]


DIGITS = tuple(str(d) for d in range(10))


def _names(class_names: Sequence[str] | None) -> list[str]:
    """The ten class names, index = label (the digits by default)."""
    names = list(DIGITS if class_names is None else map(str, class_names))
    if len(names) != 10:
        raise PipelineError(f"expected 10 class names, got {len(names)}: {names}")
    return names


def _noun(names: Sequence[str]) -> str:
    return "digit" if tuple(names) == DIGITS else "class"


def _label(names: Sequence[str], label: Any) -> str:
    """A title for one image's label: "label 7" for digits, the class name itself otherwise."""
    name = names[int(label)]
    return f"label {name}" if _noun(names) == "digit" else name


def _name_ticks(ax, names: Sequence[str], axis: str = "x") -> None:
    """Ticks 0-9 named by class; long names (Fashion-MNIST's) slanted so that they do not overlap."""
    slant = {"rotation": 40, "ha": "right"} if axis == "x" and max(map(len, names)) > 2 else {}
    getattr(ax, f"set_{axis}ticks")(range(10), names, **slant)


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


def label_distribution(y: Any, *, title: str = "Training labels", class_names: Sequence[str] | None = None) -> Figure:
    """Bar chart of how many images each class has, with the count on each bar (ticks named by `class_names`)."""
    names = _names(class_names)
    counts = np.bincount(np.asarray(y).ravel().astype(np.int64), minlength=10)[:10]
    fig = _figure(7, 3.5, layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(range(10), counts, color=DIGIT_COLORS)
    ax.bar_label(bars, fontsize=8)
    _name_ticks(ax, names)
    ax.set_xlabel(_noun(names))
    ax.set_ylabel("images")
    ax.set_title(f"{title} ({int(counts.sum())} images)")
    ax.margins(y=0.12)
    return fig


def sample_grid(x: Any, y: Any, *, cols: int = 10, title: str = "Sample images",
                class_names: Sequence[str] | None = None) -> Figure:
    """The images `x` in a grid, each titled with its label from `y` (named by `class_names`)."""
    names = _names(class_names)
    n = len(x)
    rows = max(1, math.ceil(n / cols))
    fig = _figure(1.0 * min(cols, max(n, 1)), 1.1 * rows + 0.4, layout="constrained")
    for ax, img, label in zip(_grid(fig, n, cols), x, np.asarray(y).ravel(), strict=True):
        _show(ax, img, _label(names, label))
    fig.suptitle(title)
    return fig


@torch.no_grad()
def feature_maps(model: torch.nn.Module, image: Any, *, block: int, label: int | None = None,
                 max_maps: int = 32, cols: int = 8, class_names: Sequence[str] | None = None) -> Figure:
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
    named = f" ({_label(_names(class_names), label)})" if label is not None else ""
    _show(fig.add_subplot(gs[:, :2]), image, "input" + named)
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
                  title: str = "Most confident errors", class_names: Sequence[str] | None = None) -> Figure:
    """The wrongly classified images listed in `items` ({index, true, pred, confidence}) drawn from `x`, their
    labels named by `class_names`."""
    names = _names(class_names)
    n = len(items)
    if n == 0:
        fig = _figure(4, 1.5, layout="constrained")
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        return fig
    rows = math.ceil(n / cols)
    # Two names such as "T-shirt/top→Ankle boot" are wider than an image: they get a line each.
    wide = max(map(len, names)) > 2
    fig = _figure(1.2 * min(cols, n), (1.55 if wide else 1.35) * rows + 0.4, layout="constrained")
    for ax, it in zip(_grid(fig, n, cols), items, strict=True):
        _show(ax, x[int(it["index"])], f"{names[int(it['true'])]}\u2192" + ("\n" if wide else "")
              + f"{names[int(it['pred'])]} ({100 * it['confidence']:.0f}%)")
    fig.suptitle(f"{title} (true\u2192predicted, confidence)")
    return fig


def noisy_example(clean: Any, noisy: Any, *, label: int | None = None, psnr_db: float | None = None,
                  class_names: Sequence[str] | None = None) -> Figure:
    """One image before and after adding noise, titled with its class."""
    fig = _figure(5, 2.8, layout="constrained")
    a, b = fig.subplots(1, 2)
    _show(a, clean, "clean")
    _show(b, noisy, "noisy" + (f" (PSNR {psnr_db:.1f} dB)" if psnr_db is not None else ""))
    if label is not None:
        names = _names(class_names)
        fig.suptitle(f"{_noun(names).capitalize()} {names[int(label)]}")
    return fig


def denoising_grid(rows: Mapping[str, Any], *, labels: Any = None, class_names: Sequence[str] | None = None) -> Figure:
    """One row per image set (e.g. original, noisy, denoised), the same images in each column, the first row
    titled with the `labels` named by `class_names`."""
    classes = _names(class_names)
    names = list(rows)
    n = len(rows[names[0]])
    fig = _figure(1.1 * n + 0.8, 1.15 * len(names) + 0.3, layout="constrained")
    axes = fig.subplots(len(names), n, squeeze=False)
    for r, name in enumerate(names):
        for c in range(n):
            title = _label(classes, labels[c]) if labels is not None and r == 0 else None
            _show(axes[r, c], rows[name][c], title)
        axes[r, 0].set_ylabel(name)
    return fig


# Ways to compute the t-SNE embedding (python -m mnistpipe.bench_tsne compares their speed and quality):
# scikit-learn's Barnes-Hut, or openTSNE's FFT-accelerated interpolation or Barnes-Hut, on the raw pixels or on
# their first PCA_DIMS principal components (the usual preprocessing, which also removes much of the pixel noise).
TSNE_METHODS = ("sklearn-bh-raw", "pca50+sklearn-bh", "opentsne-fft-raw", "pca50+opentsne-fft", "opentsne-bh-raw",
                "pca50+opentsne-bh")
PCA_DIMS = 50
EXAGGERATION_ITER = 250  # scikit-learn's fixed early-exaggeration phase, mirrored for openTSNE


def tsne_embed(x: Any, *, perplexity: float, seed: int, max_iter: int = 500, n_jobs: int | None = None,
               method: str = "sklearn-bh-raw") -> np.ndarray:
    """2-D t-SNE embedding (N, 2) of images (flattened pixels), by one of `TSNE_METHODS`.

    The same input, seed, method and `n_jobs` give the same output. Another thread count can give a different
    embedding (it does on some CPUs), so callers whose output must not depend on the machine pass `n_jobs`
    explicitly; the default, every core this process may use, suits timing runs only. 500 iterations (250 of
    them early exaggeration) rather than sklearn's 1000: the clusters are settled by then, and it halves the
    time. The openTSNE methods run the same 250 + 250 iterations, with exact nearest neighbours (faster than its
    default Annoy index at a few thousand images, and free of an approximate index's randomness).
    """
    from threadpoolctl import threadpool_limits  # installed with scikit-learn, which uses it itself

    if method not in TSNE_METHODS:
        raise PipelineError(f"unknown t-SNE method {method!r}; use one of {', '.join(TSNE_METHODS)}")
    a = _pixels(x).reshape(len(x), -1)
    if not 0 < perplexity < len(a):
        raise PipelineError(f"t-SNE perplexity {perplexity} must be between 0 and the number of images ({len(a)}); "
                            "lower the perplexity or embed more images")
    if max_iter < EXAGGERATION_ITER:
        raise PipelineError(f"t-SNE max_iter={max_iter} is below the {EXAGGERATION_ITER} early-exaggeration "
                            f"iterations; use at least {EXAGGERATION_ITER}")
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if method.startswith("pca50+"):
        from sklearn.decomposition import PCA

        # One BLAS thread: PCA of 10,000 images takes a fraction of a second on one, more threads only add spin
        # waits (10-50 times slower on a busy 2-core machine), and the projection is then the same for any n_jobs.
        with threadpool_limits(limits=1):
            a = PCA(n_components=min(PCA_DIMS, *a.shape), random_state=seed).fit_transform(a)
    # sklearn's gradient takes its thread count from the OpenMP limit, which threadpoolctl sets.
    with threadpool_limits(limits=n_jobs):
        if "sklearn" in method:
            from sklearn.manifold import TSNE  # imported here: sklearn's manifold module is slow to import

            return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", max_iter=max_iter,
                        random_state=seed, n_jobs=n_jobs).fit_transform(a)
        try:
            from openTSNE import TSNE as OpenTSNE
        except ImportError as e:
            raise PipelineError(f"t-SNE method {method!r} needs openTSNE ({e}); pip install openTSNE, or use "
                                "sklearn-bh-raw (visualize.tsne_method)") from None
        tsne = OpenTSNE(n_components=2, perplexity=perplexity, initialization="pca", learning_rate="auto",
                        early_exaggeration_iter=EXAGGERATION_ITER, n_iter=max_iter - EXAGGERATION_ITER,
                        negative_gradient_method="fft" if "fft" in method else "bh", neighbors="exact",
                        n_jobs=n_jobs, random_state=seed)
        return np.asarray(tsne.fit(a), dtype=np.float32)


def tsne_figure(embeddings: Mapping[str, np.ndarray], labels: Any, *, title: str | None = None,
                class_names: Sequence[str] | None = None) -> Figure:
    """One scatter panel per image set, all coloured by class with the same colours and one shared legend that
    names the classes (`class_names`)."""
    names = _names(class_names)
    title = title or f"t-SNE of test images (pixels), coloured by true {_noun(names)}"
    y = np.asarray(labels).ravel().astype(np.int64)
    fig = _figure(4.2 * len(embeddings) + 1.0, 4.4, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(embeddings), squeeze=False)).ravel()
    for ax, (name, emb) in zip(axes, embeddings.items(), strict=True):
        for d in range(10):
            pts = emb[y[: len(emb)] == d]
            ax.scatter(pts[:, 0], pts[:, 1], s=3, color=DIGIT_COLORS[d], label=names[d], rasterized=True)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [axes[0].scatter([], [], s=25, color=DIGIT_COLORS[d], label=names[d]) for d in range(10)]
    fig.legend(handles=handles, loc="outside right center", title=_noun(names), frameon=False)
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


def confusion_matrices(confusions: Mapping[str, Any], *, cols: int = 3,
                       class_names: Sequence[str] | None = None) -> Figure:
    """One 10x10 confusion matrix per model with the count in every non-empty cell, its rows and columns named by
    `class_names`.

    Cells are shaded by the fraction of each true digit (row) so that the off-diagonal errors stay visible
    next to the large diagonal counts.
    """
    names = _names(class_names)
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
        _name_ticks(ax, names)
        _name_ticks(ax, names, axis="y")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    return fig



def robustness(rows: Sequence[Mapping[str, Any]], labels: Mapping[str, str], *,
               train_std: float | None = None) -> Figure:
    """Test accuracy against noise std, one line per method.

    `rows` holds one mapping per std with "std" and each key of `labels` (method -> legend text); `train_std`,
    the noise level the noisy and denoising models were trained on, is marked with a dashed line.
    """
    rows = sorted(rows, key=lambda r: float(r["std"]))
    stds = [float(r["std"]) for r in rows]
    fig = _figure(7.0, 4.5, layout="constrained")
    ax = fig.subplots()
    for k, (key, label) in enumerate(labels.items()):
        ax.plot(stds, [100 * float(r[key]) for r in rows], marker="o", color=DIGIT_COLORS[k % 10], label=label)
    if train_std is not None:
        ax.axvline(train_std, color="grey", linestyle="--", linewidth=1,
                   label=f"training noise (std {train_std:g})")
    ax.set_xlabel("AWGN std of the test images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Accuracy against test noise")
    return fig


def study_figures(*, x: torch.Tensor, y: torch.Tensor, y_train: torch.Tensor, noisy: torch.Tensor,
                  denoised: torch.Tensor, tuned: torch.nn.Module, worst: Sequence[Mapping[str, Any]],
                  confusions: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]],
                  reference: Mapping[str, float], sample_index: int, tsne_size: int, perplexity: float, seed: int,
                  tsne_threads: int, tsne_method: str, class_names: Sequence[str], n_samples: int = 40,
                  n_denoised: int = 10) -> dict[str, Figure]:
    """Every figure of the study, by name (plots/<name>.png), from the test images `x` (float, N x 1 x 28 x 28) with
    labels `y`, their `noisy` and `denoised` versions, the training labels, the tuned CNN, its most confident errors
    (`worst`), evaluate's confusion matrices and the accuracy/cost `results` for `comparison` (`reference`: the
    clean-trained CNN's accuracy on each set). `sample_index` picks the test image of the feature maps and the noisy
    example; t-SNE embeds the first `tsne_size` images of each set."""
    n, i, k = len(y), sample_index, tsne_size
    if k > n:
        raise PipelineError(f"visualize.tsne_size={k} exceeds the {n} test images; set it to at most {n}")
    if i >= n:
        raise PipelineError(f"visualize.sample_index={i} is out of range for {n} test images; use 0-{n - 1}")
    named = {"class_names": class_names}  # every label a figure shows names its class
    sets = {"clean": x, "noisy": noisy, "denoised": denoised}
    psnr = float(noise.psnr(noisy[i:i + 1], x[i:i + 1])[0])
    embedded = {name: tsne_embed(imgs[:k], perplexity=perplexity, seed=seed, n_jobs=tsne_threads, method=tsne_method)
                for name, imgs in sets.items()}
    return {
        "label_distribution": label_distribution(y_train, **named),
        "samples": sample_grid(x[:n_samples], y[:n_samples], title="Test images", **named),
        "feature_maps_conv1": feature_maps(tuned, x[i], block=1, label=int(y[i]), **named),
        "feature_maps_conv2": feature_maps(tuned, x[i], block=2, label=int(y[i]), **named),
        "misclassified": misclassified(x, worst, title="Tuned CNN: most confident errors", **named),
        "noisy_example": noisy_example(x[i], noisy[i], label=int(y[i]), psnr_db=psnr, **named),
        "denoising": denoising_grid({"original" if r == "clean" else r: s[:n_denoised] for r, s in sets.items()},
                                    labels=y, **named),
        "tsne": tsne_figure(embedded, y[:k], **named),
        "comparison": comparison(results, reference=reference, reference_label="clean-trained (tuned) model"),
        "confusion_matrices": confusion_matrices(confusions, **named),
    }
