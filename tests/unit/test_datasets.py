"""Other MNIST-format datasets by param: each dataset's mirrors, files, checksums and class names, checked on tiny
IDX files generated here (no real dataset needed)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import pytest
import torchvision.datasets as tvd
import yaml

from mnistpipe import data, datasets, evaluate, params, plots
from mnistpipe.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parents[2]
TORCHVISION = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "kmnist": tvd.KMNIST}
KEYS = ("train_images", "train_labels", "test_images", "test_labels")
FASHION = datasets.class_names("fashion-mnist")


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()  # noqa: S324 (the published checksums are MD5)


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture
def tiny(helpers, tmp_path):
    """A generated tiny dataset: (mirror folder, decompressed bytes by key)."""
    mirror = tmp_path / "mirror"
    return mirror, helpers.write_tiny_mirror(mirror, n_train=12, n_test=6)


# ---------------------------------------------------------------- the table of datasets


def test_the_schema_and_the_download_table_know_the_same_datasets():
    assert datasets.NAMES == ("mnist", "fashion-mnist", "kmnist") and datasets.DEFAULT == "mnist"
    assert tuple(data.SOURCES) == datasets.NAMES


@pytest.mark.parametrize("name", datasets.NAMES)
def test_mirrors_files_and_checksums_are_torchvisions(name):
    """Every URL and .gz MD5 is the one torchvision publishes for the dataset, in its order."""
    src, tv = data.source(name), TORCHVISION[name]
    assert list(src.mirrors) == list(tv.mirrors)
    assert tuple(src.files) == KEYS
    assert [(f.name + ".gz", f.gz_md5) for f in src.files.values()] == [tuple(r) for r in tv.resources]
    # Digits for MNIST (torchvision writes "0 - zero"), torchvision's own names for the others.
    want = [c.split(" - ")[0] for c in tv.classes] if name == "mnist" else list(tv.classes)
    assert datasets.class_names(name) == want and len(set(want)) == 10


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_decompressed_md5s_verify_the_real_recompressed_files(name, real_dataset_dir, tmp_path):
    """The real files beside the project were recompressed (their .gz MD5s differ from the published ones): they
    verify by their decompressed bytes alone, with checksums on."""
    folder = real_dataset_dir(name)
    sums = dict(reversed(line.split()) for line in (folder / "MD5SUMS.uncompressed").read_text().splitlines()
                if line.strip())
    assert {f.name: f.raw_md5 for f in data.SOURCES[name].files.values()} == sums
    out = data.download([str(folder)], tmp_path, dataset=name, checksums=True)
    assert {k: hashlib.md5(v).hexdigest() for k, v in out.items()} == {
        k: f.raw_md5 for k, f in data.SOURCES[name].files.items()}


def test_kmnist_publishes_no_decompressed_md5s():
    assert all(f.raw_md5 is None for f in data.SOURCES["kmnist"].files.values())


def test_params_take_each_dataset_and_refuse_a_typo_with_the_choices():
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert raw["dataset"] == "mnist"  # the default run stays MNIST
    for name in datasets.NAMES:
        assert params.validate({**raw, "dataset": name}).dataset == name
    for bad in ("fashion", "MNIST", "", 1):
        with pytest.raises(PipelineError) as exc:
            params.validate({**raw, "dataset": bad})
        assert one_line(exc) == (f"params.yaml: 'dataset' Input should be 'mnist', 'fashion-mnist' or 'kmnist', "
                                 f"got {bad!r}")
    with pytest.raises(PipelineError, match="missing key 'dataset'"):
        params.validate({k: v for k, v in raw.items() if k != "dataset"})
    assert "dataset" not in params.SECTIONS


def test_unknown_dataset_is_one_line_naming_the_choices():
    for call in (lambda: data.source("fashion"), lambda: data.mirror_list("fashion", environ={}),
                 lambda: datasets.class_names("fashion")):
        with pytest.raises(PipelineError) as exc:
            call()
        assert all(n in one_line(exc) for n in ("'fashion'", "mnist, fashion-mnist, kmnist"))


# ---------------------------------------------------------------- the mirror variables


def test_each_dataset_has_its_public_mirrors_and_its_own_variable():
    for name, var in (("mnist", "MNIST_MIRROR"), ("fashion-mnist", "FASHION_MNIST_MIRROR"),
                      ("kmnist", "KMNIST_MIRROR")):
        public = list(data.source(name).mirrors)
        assert data.mirror_env(name) == var
        assert data.mirror_list(name, environ={}) == public
        assert data.mirror_list(name, environ={var: "/own"}) == ["/own", *public]
        assert data.mirror_list(name, environ={"DATASET_MIRROR": "/any"}) == ["/any", *public]
        assert data.mirror_list(name, environ={var: "/own", "DATASET_MIRROR": "/any"}) == ["/own", "/any", *public]
        assert data.mirror_list(name, environ={var: "/same", "DATASET_MIRROR": "/same"}) == ["/same", *public]
        for only in (var + "_ONLY", "DATASET_MIRROR_ONLY"):
            assert data.mirror_list(name, environ={"DATASET_MIRROR": "/any", only: "1"}) == ["/any"]
    assert len({data.source(n).mirrors for n in datasets.NAMES}) == 3


def test_another_datasets_variable_is_ignored():
    """MNIST_MIRROR (which the tests and CI set) never feeds MNIST's files to Fashion-MNIST or KMNIST."""
    env = {"MNIST_MIRROR": "/mnist", "MNIST_MIRROR_ONLY": "1", "KMNIST_MIRROR": "/kmnist"}
    assert data.mirror_list("fashion-mnist", environ=env) == list(data.source("fashion-mnist").mirrors)
    assert data.mirror_list("kmnist", environ=env) == ["/kmnist", *data.source("kmnist").mirrors]
    assert data.mirror_list("mnist", environ=env) == ["/mnist"]
    assert data.mirror_list(environ=env) == ["/mnist"]  # mnist is the default


# ---------------------------------------------------------------- checksums: the .gz's or the decompressed bytes'


def test_gz_md5_or_decompressed_md5_verifies(tiny):
    _, raw = tiny
    body = raw["train_labels"]
    packed, repacked = gzip.compress(body, mtime=0), gzip.compress(body, compresslevel=1, mtime=1)
    assert packed != repacked
    name = "train-labels-idx1-ubyte"
    # the .gz as published
    assert data.decompress_and_verify(packed, name=name, md5=None, gz_md5=md5(packed)) == body
    assert data.decompress_and_verify(packed, name=name, md5="0" * 32, gz_md5=md5(packed)) == body
    # a recompressed mirror: other .gz bytes, same decompressed bytes
    assert data.decompress_and_verify(repacked, name=name, md5=md5(body), gz_md5=md5(packed)) == body
    assert data.decompress_and_verify(repacked, name=name, md5=md5(body)) == body
    # neither matches: one line with what was found and what was expected
    with pytest.raises(PipelineError) as exc:
        data.decompress_and_verify(repacked, name=name, md5="1" * 32, gz_md5=md5(packed))
    assert one_line(exc) == (f"{name}: checksum mismatch (md5 {md5(repacked)} of the .gz, {md5(body)} decompressed; "
                             f"expected {md5(packed)} of the .gz or {'1' * 32} decompressed)")
    # only a .gz MD5 published (KMNIST): a recompressed file cannot verify
    with pytest.raises(PipelineError, match=f"expected {md5(packed)} of the .gz\\)$"):
        data.decompress_and_verify(repacked, name=name, md5=None, gz_md5=md5(packed))


@pytest.mark.parametrize("name", datasets.NAMES)
def test_download_checks_the_selected_datasets_checksums(name, tiny, tmp_path):
    """Generated files are refused against each dataset's own published MD5s, and the message says whose."""
    mirror, raw = tiny
    src = data.source(name)
    first = src.files["train_images"]
    with pytest.raises(PipelineError) as exc:
        data.download([str(mirror)], tmp_path / "dest", dataset=name)
    msg = one_line(exc)
    assert msg.startswith(f"could not get {src.title}'s {first.name}.gz from any mirror")
    assert f"expected {first.gz_md5} of the .gz" in msg
    assert (f"or {first.raw_md5} decompressed" in msg) == (first.raw_md5 is not None)
    # the check that failed and the switch for drop-ins, not "set the mirror variable" (it was set)
    assert "failed its checksum" in msg and "download.verify_md5: false" in msg
    assert data.mirror_env(name) not in msg
    others = [data.source(n).files["train_images"].gz_md5 for n in datasets.NAMES if n != name]
    assert not any(o in msg for o in others)
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())
    # verify_md5: false takes any IDX drop-in
    out = data.download([str(mirror)], tmp_path / "dest", dataset=name, checksums=False)
    assert out == raw


def test_download_accepts_files_matching_the_published_md5s(tiny, tmp_path, monkeypatch):
    """With the generated files' own MD5s published (.gz or decompressed), download() takes them; a recompressed
    copy passes only where the decompressed MD5 is known."""
    mirror, raw = tiny
    gz = {k: (mirror / f"{f.name}.gz").read_bytes() for k, f in data.source("kmnist").files.items()}
    repacked = tmp_path / "repacked"
    repacked.mkdir()
    for k, f in data.source("kmnist").files.items():
        (repacked / f"{f.name}.gz").write_bytes(gzip.compress(raw[k], compresslevel=1, mtime=7))
    by_gz = {k: data.IdxFile(f.name, md5(gz[k])) for k, f in data.source("kmnist").files.items()}
    monkeypatch.setitem(data.SOURCES, "kmnist", dataclasses.replace(data.source("kmnist"), files=by_gz))
    assert data.download([str(mirror)], tmp_path / "a", dataset="kmnist") == raw
    with pytest.raises(PipelineError, match="checksum mismatch"):
        data.download([str(repacked)], tmp_path / "b", dataset="kmnist")
    both = {k: dataclasses.replace(f, raw_md5=md5(raw[k])) for k, f in by_gz.items()}
    monkeypatch.setitem(data.SOURCES, "kmnist", dataclasses.replace(data.source("kmnist"), files=both))
    assert data.download([str(repacked)], tmp_path / "c", dataset="kmnist") == raw
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(f.name + ".gz" for f in both.values())


# ---------------------------------------------------------------- class names in reports and figures


def test_class_names_reach_the_classification_report():
    y = list(range(10)) * 2
    logits = [[1.0 if j == (t + (i == 0)) % 10 else 0.0 for j in range(10)] for i, t in enumerate(y)]
    result = evaluate.evaluate_predictions(y, logits, n_misclassified=5, class_names=FASHION)
    text = result["report_text"]
    for name in FASHION:
        assert name in text and name in result["report"]
    assert "Ankle boot" in text.splitlines()[11]  # one row per class, in label order, after the header
    assert result["report"]["T-shirt/top"]["support"] == 2 and result["report"]["T-shirt/top"]["recall"] == 0.5
    assert list(result["per_class"]) == [str(d) for d in range(10)]  # metric keys stay the labels
    plain = evaluate.evaluate_predictions(y, logits, n_misclassified=5)
    assert "Ankle boot" not in plain["report_text"] and "9" in plain["report"]
    with pytest.raises(PipelineError, match="10 distinct class names"):
        evaluate.evaluate_predictions(y, logits, n_misclassified=5, class_names=FASHION[:9])


def _texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def test_class_names_reach_the_figures_labels():
    import torch

    cm = [[5 if i == j else 0 for j in range(10)] for i in range(10)]
    fig = plots.confusion_matrices({"tuned": cm}, class_names=FASHION)
    ax = fig.axes[0]
    assert _texts(ax.get_xticklabels()) == FASHION and _texts(ax.get_yticklabels()) == FASHION
    y = torch.arange(10).repeat(3)
    ax = plots.label_distribution(y, class_names=FASHION).axes[0]
    assert _texts(ax.get_xticklabels()) == FASHION and ax.get_xlabel() == "class"
    x = torch.zeros(4, 28, 28, dtype=torch.uint8)
    fig = plots.sample_grid(x, [9, 0, 3, 9], class_names=FASHION)
    assert [a.get_title() for a in fig.axes] == ["Ankle boot", "T-shirt/top", "Dress", "Ankle boot"]
    fig = plots.misclassified(x, [{"index": 1, "true": 6, "pred": 0, "confidence": 0.9}], class_names=FASHION)
    assert fig.axes[0].get_title() == "Shirt\u2192\nT-shirt/top (90%)"  # a line per name: they are wide
    items = [{"index": 0, "true": 6, "pred": 0, "confidence": 0.9}]
    assert plots.misclassified(x, items).axes[0].get_title() == "6\u21920 (90%)"
    emb = torch.randn(30, 2, generator=torch.Generator().manual_seed(0)).numpy()
    fig = plots.tsne_figure({"clean": emb}, y, class_names=datasets.class_names("kmnist"))
    assert _texts(fig.legends[0].get_texts()) == datasets.class_names("kmnist")
    assert fig.legends[0].get_title().get_text() == "class"
    # without names: the digits, as before
    ax = plots.confusion_matrices({"tuned": cm}).axes[0]
    assert _texts(ax.get_xticklabels()) == [str(d) for d in range(10)]
    assert plots.sample_grid(x[:1], [9]).axes[0].get_title() == "label 9"
