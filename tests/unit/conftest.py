"""Shared fixtures for the unit tests: where the real MNIST files are, their bytes, and an IDX builder."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch

from mnistpipe import data

REPO_ROOT = Path(__file__).resolve().parents[2]
MNIST_ENV = data.mirror_env("mnist")  # these tests need the real MNIST files, whatever the dataset

# The tensors here are tiny: one intra-op thread avoids oversubscribing a small shared CPU, which made each
# tiny training run many times slower than with a single thread.
torch.set_num_threads(1)


def _mnist_dir() -> tuple[Path | None, str]:
    """The local MNIST mirror: $MNIST_MIRROR (a directory) if set, else <repo root>/../shared/datasets/mnist.

    Resolved once at import time so a test that monkeypatches MNIST_MIRROR cannot move it.
    """
    env = os.environ.get(MNIST_ENV, "").strip()
    if env:
        if "://" in env and not env.startswith("file://"):
            return None, f"{MNIST_ENV}={env} is a URL; these tests need a local directory of the MNIST .gz files"
        path = Path(env.removeprefix("file://"))
        source = f"{MNIST_ENV}={env}"
    else:
        path = REPO_ROOT.parent / "shared" / "datasets" / "mnist"
        source = "<repo root>/../shared/datasets/mnist (set MNIST_MIRROR to override)"
    missing = [f.name + ".gz" for f in data.SOURCES["mnist"].files.values() if not (path / (f.name + ".gz")).is_file()]
    if missing:
        return None, f"real MNIST files not found in {source}: missing {', '.join(missing)}"
    return path, ""


MNIST_DIR, MNIST_SKIP_REASON = _mnist_dir()


@pytest.fixture(scope="session")
def mnist_dir(helpers) -> Path:
    """Directory holding the four real MNIST .gz files (when absent: a skip, or a failure under CI)."""
    helpers.need(MNIST_DIR is not None, MNIST_SKIP_REASON)
    return MNIST_DIR


@pytest.fixture(scope="session")
def real_gz(mnist_dir: Path) -> dict[str, bytes]:
    """Raw .gz bytes of the small real files (both label files and the t10k images), by key of the MNIST source."""
    keys = ("test_images", "test_labels", "train_labels")
    return {k: (mnist_dir / (data.SOURCES["mnist"].files[k].name + ".gz")).read_bytes() for k in keys}


@pytest.fixture(scope="session")
def real_dataset_dir(helpers):
    """`real_dataset_dir(name)`: the folder of a dataset's real files, from its mirror variable (a directory) or
    `<repo root>/../shared/datasets/<name>`; absent, a skip (a failure under CI)."""

    def find(name: str) -> Path:
        env = os.environ.get(data.mirror_env(name), "").strip()
        path = Path(env.removeprefix("file://")) if env else REPO_ROOT.parent / "shared" / "datasets" / name
        helpers.need((path / "MD5SUMS.uncompressed").is_file(),
                     f"the real {name} files are not in {path} (set {data.mirror_env(name)} to their folder)")
        return path

    return find


@pytest.fixture(scope="session")
def real_raw(real_gz: dict[str, bytes]) -> dict[str, bytes]:
    """Decompressed bytes of the small real files."""
    return {k: gzip.decompress(v) for k, v in real_gz.items()}


@pytest.fixture(scope="session")
def t10k(real_raw: dict[str, bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """The real test set parsed by the code under test: uint8 (10000, 28, 28) images and int64 labels."""
    return data.load_pair(real_raw["test_images"], real_raw["test_labels"], name="test")


def idx_bytes(values: torch.Tensor, *, magic: int | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    """Build IDX bytes for a uint8 tensor: magic 0x08 / ndim, one big-endian int32 per dim, then the data.

    `magic` and `dims` override the header so tests can make inconsistent files.
    """
    values = values.to(torch.uint8).contiguous()
    dims = tuple(values.shape) if dims is None else dims
    magic = (0x0800 | len(dims)) if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + values.numpy().tobytes()


@pytest.fixture
def make_idx():
    """The `idx_bytes` builder, as a fixture."""
    return idx_bytes
