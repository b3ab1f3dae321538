"""MNIST: fetch the four IDX files from a mirror list, verify them, parse them, split and subset them."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from .errors import PipelineError

MIRROR_ENV = "MNIST_MIRROR"
PUBLIC_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# MD5 of the *decompressed* official files: recompressed mirrors differ in their .gz bytes only.
FILES = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
SIDE = 28


def mirror_list(environ: dict[str, str] | None = None) -> list[str]:
    """The mirrors to try in order: $MNIST_MIRROR (a directory or URL) first when set, then the public ones.

    MNIST_MIRROR_ONLY=1 drops the public mirrors (offline machines, and tests that must not reach the network).
    """
    environ = os.environ if environ is None else environ
    first = environ.get(MIRROR_ENV, "").strip()
    only = environ.get(MIRROR_ENV + "_ONLY", "").strip() not in ("", "0")
    return ([first] if first else []) + ([] if only and first else list(PUBLIC_MIRRORS))


def fetch(mirror: str, filename: str, *, timeout: float = 30.0) -> bytes:
    """Return the raw bytes of `filename` from `mirror`, a URL or a local directory (raises OSError)."""
    if "://" in mirror and not mirror.startswith("file://"):
        url = mirror.rstrip("/") + "/" + filename
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/https only)
            return resp.read()
    directory = Path(mirror.removeprefix("file://"))
    return (directory / filename).read_bytes()


def decompress_and_verify(raw: bytes, *, name: str, md5: str | None) -> bytes:
    """Gunzip `raw` and check the MD5 of the result; every failure is a `PipelineError` naming `name`."""
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        kind = "truncated" if isinstance(exc, EOFError) else "not a valid gzip file"
        raise PipelineError(f"{name}.gz is {kind} ({exc})") from exc
    if md5 is not None:
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()  # integrity check, as published
        if got != md5:
            raise PipelineError(f"{name}: checksum mismatch (md5 {got}, expected {md5})")
    return data


def download(mirrors: list[str], dest: str | os.PathLike, *, timeout: float = 30.0,
             checksums: bool = True) -> dict[str, bytes]:
    """Fetch and verify the four files, trying each mirror in turn per file.

    Each verified .gz is written atomically into `dest`. Returns the decompressed bytes by key of `FILES`.
    Raises one `PipelineError` listing every mirror tried and why it failed when a file cannot be had.
    """
    from .io import atomic_path

    out: dict[str, bytes] = {}
    for key, (name, md5) in FILES.items():
        failures = []
        for mirror in mirrors:
            try:
                raw = fetch(mirror, name + ".gz", timeout=timeout)
                out[key] = decompress_and_verify(raw, name=name, md5=md5 if checksums else None)
            except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{mirror} ({getattr(exc, 'reason', None) or exc})")
                continue
            except PipelineError as exc:
                failures.append(f"{mirror} ({exc})")
                continue
            with atomic_path(Path(dest) / (name + ".gz")) as tmp:
                tmp.write_bytes(raw)
            break
        else:
            raise PipelineError(
                f"could not get {name}.gz from any mirror; tried: {'; '.join(failures)}; "
                f"set {MIRROR_ENV} to a directory or URL that holds the MNIST files"
            )
    return out


def parse_idx(data: bytes, *, name: str, images: bool) -> torch.Tensor:
    """Parse decompressed IDX bytes with torchvision's reader and check MNIST's shape and value rules."""
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    want = IMAGE_MAGIC if images else LABEL_MAGIC
    if magic != want:
        raise PipelineError(
            f"{name}: wrong IDX magic {magic if magic is None else hex(magic)}, expected {hex(want)}; "
            "the file is not an MNIST " + ("image" if images else "label") + " file"
        )
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            x = read_sn3_pascalvincent_tensor(tmp.name, strict=True)
        except (AssertionError, RuntimeError, ValueError) as exc:
            raise PipelineError(f"{name}: IDX header and data length disagree (truncated file?)") from exc
    if images and tuple(x.shape[1:]) != (SIDE, SIDE):
        raise PipelineError(f"{name}: images are {tuple(x.shape[1:])}, expected ({SIDE}, {SIDE})")
    if not images:
        x = x.long()
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > 9):
            raise PipelineError(f"{name}: label {int(x.max())} out of range 0-9")
    return x


def load_pair(images: bytes, labels: bytes, *, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse an image file and its label file and check that they have the same count."""
    x = parse_idx(images, name=f"{name} images", images=True)
    y = parse_idx(labels, name=f"{name} labels", images=False)
    if len(x) != len(y):
        raise PipelineError(f"{name}: {len(x)} images but {len(y)} labels; the files do not belong together")
    return x, y


def split(x: torch.Tensor, y: torch.Tensor, *, val_size: int, seed: int, limit: int = 0) -> dict[str, torch.Tensor]:
    """One fixed, seeded train/val split; `limit` > 0 keeps that many images in all (for tiny runs)."""
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    if limit:
        order = order[:limit]
    if not 0 < val_size < len(order):
        raise PipelineError(
            f"download.val_size={val_size} must be between 1 and the number of training images - 1 ({len(order) - 1})"
        )
    val, train = order[:val_size].sort().values, order[val_size:].sort().values
    return {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val]}


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return x.unsqueeze(1).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float images in [0, 1] (N, 1, 28, 28) -> uint8 (N, 28, 28), rounded."""
    return x.squeeze(1).clamp(0, 1).mul(255.0).round_().to(torch.uint8)


def check_counts(images: dict, labels: dict, *, images_source: str, labels_source: str, producer: str) -> None:
    """Every `x_<part>` in `images` must have as many rows as `y_<part>` in `labels` (train, val, test...)."""
    for key, x in images.items():
        y = labels.get("y_" + key.removeprefix("x_"))
        if y is not None and len(x) != len(y):
            raise PipelineError(
                f"{images_source} has {len(x)} {key.removeprefix('x_')} images but {labels_source} has {len(y)} "
                f"labels; rerun `dvc repro {producer}`"
            )
