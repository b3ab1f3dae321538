"""MNIST-format datasets: fetch the four IDX files from a mirror list, verify them, parse them, split and subset them.

`SOURCES` holds each dataset's public mirrors, file names and published checksums; params.yaml's `dataset` picks
one (names and class names are in `datasets.py`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import threading
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from . import datasets
from .errors import PipelineError

# The dataset-neutral mirror variable; each dataset also has its own (`mirror_env`), MNIST_MIRROR among them.
NEUTRAL_MIRROR_ENV = "DATASET_MIRROR"


@dataclass(frozen=True)
class IdxFile:
    """One of a dataset's four files: its name without `.gz` and the MD5s published for it.

    `gz_md5` is the MD5 of the `.gz` file as published, `raw_md5` that of its decompressed bytes (None where none
    is published). A file verifies when either matches, so a mirror that recompressed the files still verifies
    wherever the decompressed MD5 is known.
    """

    name: str
    gz_md5: str | None
    raw_md5: str | None = None


@dataclass(frozen=True)
class Source:
    """Where one dataset's files can be fetched and how to check them."""

    title: str
    mirrors: tuple[str, ...]
    files: dict[str, IdxFile]


# Mirrors and .gz MD5s as torchvision's MNIST, FashionMNIST and KMNIST datasets publish them. Decompressed MD5s:
# MNIST's are the widely published sums of the official files; Fashion-MNIST's are the `raw_data` sums that public
# FashionMNIST loaders list beside torchvision's .gz sums (and that Debian's dataset-fashion-mnist files match).
# No decompressed sums are published for KMNIST, so a recompressed KMNIST copy needs `download.verify_md5: false`.
SOURCES: dict[str, Source] = {
    "mnist": Source("MNIST", (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ), {
        "train_images": IdxFile("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                "6bbc9ace898e44ae57da46a324031adb"),
        "train_labels": IdxFile("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432",
                                "a25bea736e30d166cdddb491f175f624"),
        "test_images": IdxFile("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3",
                               "2646ac647ad5339dbf082846283269ea"),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c",
                               "27ae3e4e09519cfbb04c329615203637"),
    }),
    "fashion-mnist": Source("Fashion-MNIST", (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ), {
        "train_images": IdxFile("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        "train_labels": IdxFile("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe",
                                "9018921c3c673c538a1fc5bad174d6f9"),
        "test_images": IdxFile("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79",
                               "8181f5470baa50b63fa0f6fddb340f0a"),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310",
                               "15d484375f8d13e6eb1aabb0c3f46965"),
    }),
    "kmnist": Source("KMNIST", (
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    ), {
        "train_images": IdxFile("train-images-idx3-ubyte", "bdb82020997e1d708af4cf47b453dcf7"),
        "train_labels": IdxFile("train-labels-idx1-ubyte", "e144d726b3acfaa3e44228e80efcd344"),
        "test_images": IdxFile("t10k-images-idx3-ubyte", "5c965bf0a639b31b8f53240b1b52f4d7"),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte", "7320c461ea6c1c855c0b718fb2a4b134"),
    }),
}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
# No file of these datasets, packed or unpacked, is larger than 47 MB: anything past this cap (fetched or
# decompressed) is refused before it can fill the memory (a gzip bomb, a mirror that streams forever).
MAX_FILE_BYTES = 64 * 2**20
CHUNK = 2**16
SIDE = 28


def source(dataset: str) -> Source:
    """The mirrors, files and checksums of `dataset` (a name of `datasets.NAMES`)."""
    if dataset not in SOURCES:
        raise PipelineError(f"unknown dataset {dataset!r}; set `dataset` to one of {', '.join(SOURCES)}")
    return SOURCES[dataset]


def mirror_env(dataset: str) -> str:
    """The variable naming a local mirror of `dataset` alone: MNIST_MIRROR, FASHION_MNIST_MIRROR, KMNIST_MIRROR."""
    return dataset.upper().replace("-", "_") + "_MIRROR"


def mirror_list(dataset: str = datasets.DEFAULT, *, environ: dict[str, str] | None = None) -> list[str]:
    """The mirrors of `dataset` to try in order: its own variable (MNIST_MIRROR for mnist), then DATASET_MIRROR,
    each a directory or URL when set, then the dataset's public mirrors.

    `<variable>_ONLY=1` (either one's) drops the public mirrors when a local one is set (offline machines, and
    tests that must not reach the network).
    """
    environ = os.environ if environ is None else environ
    public = source(dataset).mirrors
    names = (mirror_env(dataset), NEUTRAL_MIRROR_ENV)
    local = list(dict.fromkeys(m for m in (environ.get(n, "").strip() for n in names) if m))
    only = any(environ.get(n + "_ONLY", "").strip() not in ("", "0") for n in names)
    return local + ([] if only and local else list(public))


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n} bytes"


def _read_capped(chunks, *, what: str, limit: int) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            raise PipelineError(f"{what} is larger than {_size(limit)} (the largest MNIST-format file is 47 MB); "
                                "it is not an MNIST-format file")
    return bytes(out)


def _http_get(url: str, *, timeout: float, what: str, limit: int) -> bytes:
    """The body of `url`, all of it within `timeout` seconds: connect, response headers and body together.

    urllib's own timeout bounds each socket operation, so a server that trickles a byte every few seconds, in its
    headers or its body, would never trip it. The request runs in a worker thread that the caller waits for with
    one deadline; a late worker is told to stop at its next chunk and is left to finish on its own (a daemon
    thread, so it never holds the process open).
    """
    result: dict[str, object] = {}
    cancelled = threading.Event()

    def chunks(resp):
        while not cancelled.is_set() and (chunk := resp.read1(CHUNK)):
            yield chunk

    def worker() -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/https only)
                result["body"] = _read_capped(chunks(resp), what=what, limit=limit)
        except BaseException as exc:  # handed to the waiting thread, which raises it there
            result["error"] = exc

    thread = threading.Thread(target=worker, name=f"fetch {url}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        cancelled.set()
        raise TimeoutError(f"no complete file within {timeout:g} s (download.timeout)")
    error = result.get("error")
    if isinstance(error, TimeoutError) or (isinstance(error, urllib.error.URLError)
                                           and isinstance(error.reason, TimeoutError)):
        raise TimeoutError(f"no complete file within {timeout:g} s (download.timeout)") from error
    if isinstance(error, BaseException):
        raise error
    return result["body"]  # type: ignore[return-value]


def fetch(mirror: str, filename: str, *, timeout: float = 30.0, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Return the raw bytes of `filename` from `mirror`, a URL or a local directory (raises OSError).

    A URL must deliver the whole file within `timeout` seconds (TimeoutError otherwise); a file larger than
    `max_bytes` is refused with a `PipelineError`.
    """
    what = f"{filename} at {mirror}"
    if "://" in mirror and not mirror.startswith("file://"):
        url = mirror.rstrip("/") + "/" + filename
        return _http_get(url, timeout=timeout, what=what, limit=max_bytes)
    path = Path(mirror.removeprefix("file://")) / filename
    with open(path, "rb") as f:
        return _read_capped(iter(lambda: f.read(CHUNK), b""), what=what, limit=max_bytes)


def gunzip_capped(raw: bytes, *, name: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Gunzip `raw` (all its members) without ever holding more than `max_bytes` of output.

    A gzip bomb (a small .gz that expands to gigabytes) is refused as soon as the output passes the cap.
    """
    out = bytearray()
    rest = memoryview(raw)
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pos = 0
            while not d.eof:
                if d.unconsumed_tail:
                    piece = d.unconsumed_tail
                else:
                    piece, pos = rest[pos:pos + CHUNK], pos + CHUNK
                before = len(out)
                # max_length: however small the input, one call never expands past the cap.
                out += d.decompress(piece, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise PipelineError(f"{name}.gz decompresses to more than {_size(max_bytes)} (the largest "
                                        "MNIST-format file is 47 MB); it is not an MNIST-format file (a gzip bomb?)")
                if not piece and len(out) == before and not d.eof:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
            rest = memoryview(d.unused_data)
            if not bytes(rest).strip(b"\0"):  # nothing left but the zero padding that gzip tolerates too
                return bytes(out)
    except zlib.error as exc:
        raise PipelineError(f"{name}.gz is not a valid gzip file ({exc})") from exc
    except EOFError as exc:
        raise PipelineError(f"{name}.gz is truncated ({exc})") from exc


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()  # integrity check, as published


def decompress_and_verify(raw: bytes, *, name: str, md5: str | None, gz_md5: str | None = None,
                          max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Gunzip `raw` (at most `max_bytes` of output) and check it against the published MD5s.

    The file verifies when the MD5 of `raw` equals `gz_md5` or the MD5 of the decompressed bytes equals `md5`;
    with both None nothing is checked. Every failure is a one-line `PipelineError` naming `name`.
    """
    got_gz = _md5(raw)
    data = gunzip_capped(raw, name=name, max_bytes=max_bytes)
    if (md5 is None and gz_md5 is None) or (gz_md5 is not None and got_gz == gz_md5):
        return data
    got = _md5(data)
    if got != md5:
        expected = " or ".join(([f"{gz_md5} of the .gz"] if gz_md5 else []) + ([f"{md5} decompressed"] if md5 else []))
        raise PipelineError(f"{name}: checksum mismatch (md5 {got_gz} of the .gz, {got} decompressed; "
                            f"expected {expected})")
    return data


def download(mirrors: list[str], dest: str | os.PathLike, *, dataset: str = datasets.DEFAULT, timeout: float = 30.0,
             checksums: bool = True) -> dict[str, bytes]:
    """Fetch and verify the four files of `dataset`, trying each mirror in turn per file.

    `timeout` bounds the whole fetch of one file from one mirror (a slow mirror is then dropped for the next).
    With `checksums` each file must match the MD5 published for its .gz or for its decompressed bytes. Each
    verified .gz is written atomically into `dest`. Returns the decompressed bytes by key of the dataset's files.
    Raises one `PipelineError` listing every mirror tried and why it failed when a file cannot be had.
    """
    from .io import atomic_path

    src = source(dataset)
    out: dict[str, bytes] = {}
    for key, f in src.files.items():
        failures, checksum_failed = [], False
        for mirror in mirrors:
            try:
                raw = fetch(mirror, f.name + ".gz", timeout=timeout)
                out[key] = decompress_and_verify(raw, name=f.name, md5=f.raw_md5 if checksums else None,
                                                 gz_md5=f.gz_md5 if checksums else None)
            except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{mirror} ({getattr(exc, 'reason', None) or exc})")
                continue
            except PipelineError as exc:
                failures.append(f"{mirror} ({exc})")
                checksum_failed |= "checksum mismatch" in str(exc)
                continue
            with atomic_path(Path(dest) / (f.name + ".gz")) as tmp:
                tmp.write_bytes(raw)
            break
        else:
            if checksum_failed:
                hint = ("a file arrived but failed its checksum: point the mirror at the genuine files, or set "
                        "download.verify_md5: false for an IDX drop-in whose checksums are not published")
            else:
                hint = (f"set {mirror_env(dataset)} or {NEUTRAL_MIRROR_ENV} to a directory or URL that holds the "
                        f"four {src.title} .gz files")
            raise PipelineError(f"could not get {src.title}'s {f.name}.gz from any mirror; tried: "
                                f"{'; '.join(failures)}; {hint}")
    return out


def parse_idx(data: bytes, *, name: str, images: bool) -> torch.Tensor:
    """Parse decompressed IDX bytes with torchvision's reader and check the MNIST format's shape and value rules."""
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    want = IMAGE_MAGIC if images else LABEL_MAGIC
    if magic != want:
        raise PipelineError(
            f"{name}: wrong IDX magic {magic if magic is None else hex(magic)}, expected {hex(want)}; "
            "the file is not an MNIST-format " + ("image" if images else "label") + " file"
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
