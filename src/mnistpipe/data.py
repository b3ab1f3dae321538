"""MNIST: fetch the four IDX files from a mirror list, verify them, parse them, split and subset them."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
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
# No MNIST file, packed or unpacked, is larger than 47 MB: anything past this cap (fetched or decompressed) is
# refused before it can fill the memory (a gzip bomb, a mirror that streams forever).
MAX_FILE_BYTES = 64 * 2**20
CHUNK = 2**16
SIDE = 28


def mirror_list(environ: dict[str, str] | None = None) -> list[str]:
    """The mirrors to try in order: $MNIST_MIRROR (a directory or URL) first when set, then the public ones.

    MNIST_MIRROR_ONLY=1 drops the public mirrors (offline machines, and tests that must not reach the network).
    """
    environ = os.environ if environ is None else environ
    first = environ.get(MIRROR_ENV, "").strip()
    only = environ.get(MIRROR_ENV + "_ONLY", "").strip() not in ("", "0")
    return ([first] if first else []) + ([] if only and first else list(PUBLIC_MIRRORS))


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n} bytes"


def _read_capped(chunks, *, what: str, limit: int) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            raise PipelineError(f"{what} is larger than {_size(limit)} (MNIST's largest file is 47 MB); "
                                "it is not an MNIST file")
    return bytes(out)


def _http_chunks(url: str, *, timeout: float, deadline: float):
    """Yield the body of `url` in chunks; raise TimeoutError once `deadline` (time.monotonic) has passed."""
    late = TimeoutError(f"no complete file within {timeout:g} s (download.timeout)")

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise late
        return remaining

    try:
        with urllib.request.urlopen(url, timeout=left()) as resp:  # noqa: S310 (http/https only)
            # urllib's timeout bounds each socket read, not the whole body: a server that trickles a byte every
            # few seconds would never time out. read1 returns what one read brings, so the deadline is checked
            # often, and the socket's own timeout is cut to the time left where the response exposes its socket.
            sock = getattr(getattr(resp.fp, "raw", None), "_sock", None)
            while True:
                if sock is not None:
                    sock.settimeout(left())
                chunk = resp.read1(CHUNK)
                if not chunk:
                    return
                left()
                yield chunk
    except TimeoutError as exc:
        if exc is late:
            raise
        raise late from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise late from exc
        raise


def fetch(mirror: str, filename: str, *, timeout: float = 30.0, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Return the raw bytes of `filename` from `mirror`, a URL or a local directory (raises OSError).

    A URL must deliver the whole file within `timeout` seconds (TimeoutError otherwise); a file larger than
    `max_bytes` is refused with a `PipelineError`.
    """
    what = f"{filename} at {mirror}"
    if "://" in mirror and not mirror.startswith("file://"):
        url = mirror.rstrip("/") + "/" + filename
        return _read_capped(_http_chunks(url, timeout=timeout, deadline=time.monotonic() + timeout),
                            what=what, limit=max_bytes)
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
                    raise PipelineError(f"{name}.gz decompresses to more than {_size(max_bytes)} (MNIST's "
                                        "largest file is 47 MB); it is not an MNIST file (a gzip bomb?)")
                if not piece and len(out) == before and not d.eof:
                    raise EOFError("compressed file ended before the end-of-stream marker was reached")
            rest = memoryview(d.unused_data)
            if not bytes(rest).strip(b"\0"):  # nothing left but the zero padding that gzip tolerates too
                return bytes(out)
    except zlib.error as exc:
        raise PipelineError(f"{name}.gz is not a valid gzip file ({exc})") from exc
    except EOFError as exc:
        raise PipelineError(f"{name}.gz is truncated ({exc})") from exc


def decompress_and_verify(raw: bytes, *, name: str, md5: str | None, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Gunzip `raw` (at most `max_bytes` of output) and check the MD5 of the result; every failure is a
    `PipelineError` naming `name`."""
    data = gunzip_capped(raw, name=name, max_bytes=max_bytes)
    if md5 is not None:
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()  # integrity check, as published
        if got != md5:
            raise PipelineError(f"{name}: checksum mismatch (md5 {got}, expected {md5})")
    return data


def download(mirrors: list[str], dest: str | os.PathLike, *, timeout: float = 30.0,
             checksums: bool = True) -> dict[str, bytes]:
    """Fetch and verify the four files, trying each mirror in turn per file.

    `timeout` bounds the whole fetch of one file from one mirror (a slow mirror is then dropped for the next).
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
