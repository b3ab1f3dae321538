"""Every figure function on tiny random data: the right number of panels, and it renders; t-SNE; save_png."""

from __future__ import annotations

import io as _io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fitting import cnn_config
from matplotlib.figure import Figure

from mnistpipe import models, plots
from mnistpipe.errors import PipelineError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rendered(fig: Figure) -> Figure:
    """Draw the figure (layout and legends are only resolved then) and hand it back."""
    assert isinstance(fig, Figure)
    fig.savefig(_io.BytesIO(), format="png", dpi=30)
    return fig


def _n_axes(fig: Figure) -> int:
    return len(_rendered(fig).axes)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (60, 28, 28), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def labels() -> torch.Tensor:
    return torch.arange(60) % 10


@pytest.fixture(scope="module")
def cnn() -> models.CNN:
    torch.manual_seed(0)
    return models.CNN(cnn_config(channels=(4, 8), hidden=0)).eval()


def test_label_distribution(labels):
    fig = plots.label_distribution(labels)
    assert _n_axes(fig) == 1
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [6] * 10


def test_sample_grid_has_one_panel_per_image(images, labels):
    assert _n_axes(plots.sample_grid(images[:12], labels[:12], cols=5)) == 12
    fig = plots.sample_grid(images[:3].float().div(255).unsqueeze(1), labels[:3])  # float (N, 1, 28, 28) too
    assert _n_axes(fig) == 3
    assert fig.axes[2].get_title() == "label 2"


@pytest.mark.parametrize("block, channels", [(1, 4), (2, 8)])
def test_feature_maps_show_input_and_every_map(cnn, images, block, channels):
    assert _n_axes(plots.feature_maps(cnn, images[0], block=block, label=3)) == 1 + channels


def test_feature_maps_limit_and_bad_block(cnn, images):
    assert _n_axes(plots.feature_maps(cnn, images[0].float() / 255, block=2, max_maps=5, cols=3)) == 6
    with pytest.raises(PipelineError, match="2 conv block"):
        plots.feature_maps(cnn, images[0], block=3)


def test_misclassified(images):
    items = [{"index": 5, "true": 3, "pred": 5, "confidence": 0.97},
             {"index": 0, "true": 7, "pred": 1, "confidence": 0.61},
             {"index": 9, "true": 4, "pred": 9, "confidence": 0.5}]
    fig = plots.misclassified(images, items, cols=2)
    assert _n_axes(fig) == 3
    assert fig.axes[0].get_title() == "3\u21925 (97%)"
    assert _n_axes(plots.misclassified(images, [])) == 1


def test_noisy_example(images):
    assert _n_axes(plots.noisy_example(images[0], images[1], label=4, psnr_db=11.5)) == 2


def test_denoising_grid_rows_times_columns(images, labels):
    x = images[:4].float().div(255).unsqueeze(1)
    fig = plots.denoising_grid({"original": x, "noisy": x.flip(-1), "denoised": x.flip(-2)}, labels=labels[:4])
    assert _n_axes(fig) == 12
    assert fig.axes[0].get_ylabel() == "original" and fig.axes[8].get_ylabel() == "denoised"


def test_tsne_figure_one_panel_per_set(labels):
    rng = np.random.default_rng(0)
    emb = {name: rng.normal(size=(60, 2)) for name in ("clean", "noisy", "denoised")}
    fig = plots.tsne_figure(emb, labels)
    assert _n_axes(fig) == 3
    assert [ax.get_title() for ax in fig.axes] == ["clean", "noisy", "denoised"]
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 10


def test_comparison_two_panels():
    results = {"clean": {"accuracy": 0.99, "seconds": {"cnn": 30.0}},
               "noisy": {"accuracy": 0.97, "seconds": {"cnn": 31.0}},
               "denoised": {"accuracy": 0.98, "seconds": {"cnn": 29.0, "dae": 12.0}}}
    fig = plots.comparison(results, reference={"noisy": 0.8, "denoised": 0.95})
    assert _n_axes(fig) == 2
    tops = [p.get_y() + p.get_height() for p in fig.axes[1].patches]
    assert max(tops) == pytest.approx(41.0)  # the stacked denoised bar: CNN plus autoencoder
    assert _n_axes(plots.comparison({"clean": {"accuracy": 0.5, "seconds": {"cnn": 1.0}}})) == 2


def test_confusion_matrices_one_panel_per_model():
    rng = np.random.default_rng(0)
    cms = {f"model{i}": rng.integers(0, 20, size=(10, 10)).tolist() for i in range(5)}
    fig = plots.confusion_matrices(cms)
    assert _n_axes(fig) == 5
    assert fig.axes[0].get_title().startswith("model0 (accuracy")
    assert _n_axes(plots.confusion_matrices({"only": np.eye(10, dtype=int) * 3})) == 1


# The method the pipeline uses (visualize.tsne_method) besides the default: both must be deterministic.
PIPELINE_TSNE = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())["visualize"][
    "tsne_method"]


@pytest.mark.parametrize("method", sorted({"sklearn-bh-raw", PIPELINE_TSNE}))
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_tsne_embed_shape_and_determinism(images, n_jobs, method):
    """Run twice with the same seed and thread count: the same embedding. Another thread count may give another
    one on some CPUs, which is why the stage pins the count (visualize.tsne_threads) instead of using the cores."""
    a = plots.tsne_embed(images, perplexity=5, seed=0, max_iter=300, n_jobs=n_jobs, method=method)
    b = plots.tsne_embed(images, perplexity=5, seed=0, max_iter=300, n_jobs=n_jobs, method=method)
    assert a.shape == (60, 2)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    c = plots.tsne_embed(images, perplexity=5, seed=1, max_iter=300, n_jobs=n_jobs, method=method)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("method", plots.TSNE_METHODS)
def test_every_tsne_method_separates_clusters(method):
    """Three well-separated clusters of images: every method gives finite (N, 2) points in which nearly every
    image's nearest embedded neighbour is from its own cluster. t-SNE promises neighbourhoods, not a perfect
    partition (one point of 90 may land among another cluster's); a method that ignored its input would score
    about a third."""
    rng = np.random.default_rng(0)
    centres = rng.random((3, 784))
    y = np.arange(90) % 3
    x = np.clip(centres[y] + rng.normal(0, 0.1, (90, 784)), 0, 1).astype(np.float32)
    emb = plots.tsne_embed(x, perplexity=10, seed=0, max_iter=300, n_jobs=1, method=method)
    assert emb.shape == (90, 2) and np.isfinite(emb).all()
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1) + np.diag(np.full(90, np.inf))
    assert (y[d.argmin(1)] == y).mean() >= 0.95


def test_tsne_embed_rejects_bad_arguments(images, monkeypatch):
    with pytest.raises(PipelineError, match="perplexity"):
        plots.tsne_embed(images[:10], perplexity=30, seed=0)
    with pytest.raises(PipelineError, match="unknown t-SNE method 'umap'"):
        plots.tsne_embed(images, perplexity=5, seed=0, method="umap")
    with pytest.raises(PipelineError, match="max_iter=100"):
        plots.tsne_embed(images, perplexity=5, seed=0, max_iter=100)
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # makes `import openTSNE` fail as if it were absent
    with pytest.raises(PipelineError, match="needs openTSNE.*sklearn-bh-raw"):
        plots.tsne_embed(images, perplexity=5, seed=0, method="pca50+opentsne-fft")


def test_save_png_writes_png_atomically_and_closes(tmp_path, labels):
    fig = plots.label_distribution(labels)
    out = tmp_path / "sub" / "labels.png"
    plots.save_png(fig, out)
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(out.parent) == ["labels.png"]  # no temporary file left behind
    assert fig.axes == []  # closed: its artists are released


def test_save_png_failure_leaves_nothing(tmp_path, labels):
    fig = plots.label_distribution(labels)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_png(fig, tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_study_figures_refuse_a_sample_or_tsne_size_beyond_the_test_set():
    x, y = torch.zeros(12, 1, 28, 28), torch.zeros(12, dtype=torch.long)
    kw = {"x": x, "y": y, "y_train": y, "noisy": x, "denoised": x, "tuned": None, "worst": [], "confusions": {},
          "results": {}, "reference": {}, "seed": 0, "perplexity": 5, "tsne_threads": 1,
          "tsne_method": "sklearn-bh-raw", "class_names": [str(d) for d in range(10)]}
    with pytest.raises(PipelineError, match=r"visualize.tsne_size=13 exceeds the 12 test images"):
        plots.study_figures(**kw, sample_index=0, tsne_size=13)
    with pytest.raises(PipelineError, match=r"visualize.sample_index=12 is out of range for 12 test images; use 0-11"):
        plots.study_figures(**kw, sample_index=12, tsne_size=12)
