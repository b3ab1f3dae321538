"""`dataset: fashion-mnist` (or kmnist) through the real stage scripts: `download` fetches that dataset's files from
the mirror the dataset-neutral variable names, checks them against that dataset's published MD5s, and `evaluate`
names its classes in the reports.

The download test needs no real dataset: it runs on a tiny Fashion-MNIST stand-in generated here, in a folder that
holds only the stage scripts, the library and params.yaml.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture
def mini_repo(helpers, tmp_path):
    """stages/, src/mnistpipe/ and params.yaml of the working tree: enough to run `download` alone."""
    repo = tmp_path / "repo"
    for rel in ("stages", "src/mnistpipe"):
        shutil.copytree(helpers.REPO_ROOT / rel, repo / rel, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(helpers.REPO_ROOT / "params.yaml", repo / "params.yaml")
    return repo


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _images(raw: bytes):
    import torch

    return torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(-1, 28, 28)


def test_download_stage_fetches_fashion_mnist_from_the_dataset_mirror(mini_repo, helpers, tmp_path):
    import torch

    mirror = tmp_path / "fashion"
    raw = helpers.write_tiny_mirror(mirror, n_train=30, n_test=8, seed=1)
    helpers.set_param(mini_repo, "download.val_size", 5)
    helpers.set_param(mini_repo, "download.train_limit", 0)
    helpers.set_param(mini_repo, "download.test_limit", 0)
    # stage_env keeps MNIST_MIRROR on the real MNIST files: it must not stand in for Fashion-MNIST's.
    env = {"DATASET_MIRROR": str(mirror), "DATASET_MIRROR_ONLY": "1"}
    before = _files(mini_repo)

    helpers.set_param(mini_repo, "dataset", "fashion-mnist")
    rc, _, err = helpers.run_stage(mini_repo, "download", env=env)
    assert rc == 2, err[-3000:]
    # The generated files are not the published Fashion-MNIST ones: refused with Fashion-MNIST's .gz MD5.
    helpers.one_line_error(err, "could not get Fashion-MNIST's train-images-idx3-ubyte.gz", str(mirror),
                           "checksum mismatch", "expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d of the .gz or "
                           "f4a8712d7a061bf5bd6d2ca38dc4d50a decompressed", "failed its checksum",
                           "download.verify_md5: false")
    assert "set FASHION_MNIST_MIRROR" not in err
    assert _files(mini_repo) == before

    helpers.set_param(mini_repo, "download.verify_md5", False)  # an IDX drop-in: any checksum
    rc, _, err = helpers.run_stage(mini_repo, "download", env=env)
    assert rc == 0, err[-3000:]
    train = torch.load(mini_repo / "data/prepared/train.pt", weights_only=True)
    test = torch.load(mini_repo / "data/prepared/test.pt", weights_only=True)
    assert torch.equal(test["x_test"], _images(raw["test_images"]))
    assert test["y_test"].tolist() == list(raw["test_labels"][8:])
    # train + val is the generated training set, each image with its own label
    pairs = sorted((bytes(x.flatten().tolist()), int(y)) for part in ("train", "val")
                   for x, y in zip(train[f"x_{part}"], train[f"y_{part}"], strict=True))
    assert pairs == sorted((bytes(x.flatten().tolist()), y)
                           for x, y in zip(_images(raw["train_images"]), raw["train_labels"][8:], strict=True))
    assert len(train["y_val"]) == 5
    summary = json.loads((mini_repo / "metrics/download.json").read_text())
    assert (summary["n_train"], summary["n_val"], summary["n_test"]) == (25, 5, 8)
    for f in mirror.iterdir():
        assert (mini_repo / "data/raw" / f.name).read_bytes() == f.read_bytes()


def test_download_stage_verifies_the_real_recompressed_fashion_mnist(mini_repo, helpers):
    """The real Fashion-MNIST files beside the project have recompressed .gz wrappers: with verify_md5 on they
    pass on their decompressed MD5s, through FASHION_MNIST_MIRROR as a user would set it."""
    folder = os.environ.get("FASHION_MNIST_MIRROR", "").strip() or str(
        helpers.REPO_ROOT.parent / "shared" / "datasets" / "fashion-mnist")
    helpers.need((Path(folder) / "MD5SUMS.uncompressed").is_file(),
                 f"the real Fashion-MNIST files are not in {folder} (set FASHION_MNIST_MIRROR to their folder)")
    helpers.set_param(mini_repo, "dataset", "fashion-mnist")
    helpers.set_param(mini_repo, "download.verify_md5", True)
    rc, _, err = helpers.run_stage(mini_repo, "download",
                                   env={"FASHION_MNIST_MIRROR": folder, "FASHION_MNIST_MIRROR_ONLY": "1"})
    assert rc == 0, err[-3000:]
    summary = json.loads((mini_repo / "metrics/download.json").read_text())
    assert summary["n_train"] + summary["n_val"] == 60000 and summary["n_test"] == 10000


def test_dataset_param_reruns_download_and_names_the_classes_in_the_reports(repo_copy, helpers):
    """`dataset` is a param of download (whose new data then reruns everything after it), of the three stages
    that name classes (evaluate, visualize, report) and of the five that record it in their checkpoints;
    evaluate's reports then use
    Fashion-MNIST's names while the metric keys stay 0-9."""
    helpers.set_param(repo_copy, "dataset", "fashion-mnist")
    proc = helpers.dvc(repo_copy, "status", "--json", check=True)
    assert set(json.loads(proc.stdout or "{}")) == {"validate_params", "download", "evaluate", "visualize", "report",
                                                    "train_baseline", "tune_cnn", "select_cnn", "train_on_noisy",
                                                    "train_dae",
                                                    "train_on_denoised"}
    rc, _, err = helpers.run_stage(repo_copy, "evaluate")
    assert rc == 0, err[-3000:]
    reports = repo_copy / "metrics" / "evaluate" / "reports"
    text = (reports / "tuned.txt").read_text()
    rows = [line.split()[0] for line in text.splitlines()[2:12]]
    assert rows == [name.split()[0] for name in FASHION], text
    assert "Ankle boot" in text
    assert set(FASHION) <= set(json.loads((reports / "tuned.json").read_text()))
    summary = json.loads((repo_copy / "metrics" / "evaluate.json").read_text())
    assert list(summary["tuned"]["per_class"]) == [str(d) for d in range(10)]
