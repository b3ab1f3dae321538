"""mnistpipe.data: IDX parsing, checksums, the mirror download and the train/val split."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import threading
import time
from pathlib import Path

import pytest
import torch

from mnistpipe import data
from mnistpipe.errors import PipelineError

MNIST = data.SOURCES["mnist"]
SMALL = ("train_labels", "test_labels")  # the two label files: enough for the per-file download logic


def gz_name(key: str) -> str:
    return MNIST.files[key].name + ".gz"


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- parsing real bytes


def test_parse_real_t10k(t10k):
    x, y = t10k
    assert x.shape == (10_000, 28, 28)
    assert x.dtype == torch.uint8
    assert y.shape == (10_000,)
    assert y.dtype == torch.int64
    assert int(y[0]) == 7  # the first MNIST test label
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert (y.bincount(minlength=10) > 800).all()  # every digit is well represented
    assert int(x.max()) == 255 and int(x.min()) == 0
    # the border of an MNIST digit is blank, its centre is not
    assert int(x[0, 0].sum()) == 0 and int(x[0, 10:18, 10:18].sum()) > 0


def test_parse_idx_matches_raw_bytes(real_raw):
    raw = real_raw["test_images"]
    x = data.parse_idx(raw, name="t10k", images=True)
    assert int.from_bytes(raw[4:8], "big") == 10_000
    assert bytes(x[0].flatten().tolist()) == raw[16:16 + 784]
    assert bytes(x[-1].flatten().tolist()) == raw[-784:]


def test_parse_idx_synthetic_roundtrip(make_idx):
    imgs = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 9, 4], dtype=torch.uint8)
    x, y = data.load_pair(make_idx(imgs), make_idx(labels), name="tiny")
    assert torch.equal(x, imgs)
    assert y.tolist() == [0, 9, 4] and y.dtype == torch.int64


# ---------------------------------------------------------------- checksums and gzip


def test_decompress_and_verify_accepts_real_file(real_gz, real_raw):
    name, md5 = MNIST.files["test_images"].name, MNIST.files["test_images"].raw_md5
    out = data.decompress_and_verify(real_gz["test_images"], name=name, md5=md5)
    assert out == real_raw["test_images"]
    assert len(out) == 16 + 10_000 * 28 * 28
    assert hashlib.md5(out).hexdigest() == md5  # noqa: S324 (the published checksum)


def test_one_changed_byte_is_a_checksum_mismatch(real_raw):
    name, md5 = MNIST.files["test_labels"].name, MNIST.files["test_labels"].raw_md5
    changed = bytearray(real_raw["test_labels"])
    changed[8] ^= 0x01  # the first label: 7 -> 6, still a valid label
    raw = gzip.compress(bytes(changed))
    with pytest.raises(PipelineError, match="checksum mismatch") as exc:
        data.decompress_and_verify(raw, name=name, md5=md5)
    assert name in one_line(exc) and md5 in str(exc.value)
    # with verification off the same bytes are accepted as they are
    assert data.decompress_and_verify(raw, name=name, md5=None) == bytes(changed)


def test_truncated_gzip(real_gz):
    name, md5 = MNIST.files["test_labels"].name, MNIST.files["test_labels"].raw_md5
    raw = real_gz["test_labels"]
    with pytest.raises(PipelineError, match="truncated") as exc:
        data.decompress_and_verify(raw[: len(raw) // 2], name=name, md5=md5)
    assert f"{name}.gz" in one_line(exc)


def test_bytes_that_are_not_gzip():
    with pytest.raises(PipelineError, match="not a valid gzip file") as exc:
        data.decompress_and_verify(b"<html>404 Not Found</html>" * 4, name="t10k-labels-idx1-ubyte", md5=None)
    assert "t10k-labels-idx1-ubyte.gz" in one_line(exc)


# ---------------------------------------------------------------- bad IDX content


def test_wrong_idx_magic(real_raw):
    with pytest.raises(PipelineError, match="wrong IDX magic 0x801, expected 0x803") as exc:
        data.parse_idx(real_raw["test_labels"], name="t10k images", images=True)
    assert "t10k images" in one_line(exc)
    with pytest.raises(PipelineError, match="wrong IDX magic 0x803, expected 0x801"):
        data.parse_idx(real_raw["test_images"], name="t10k labels", images=False)
    with pytest.raises(PipelineError, match="wrong IDX magic"):
        data.parse_idx(b"", name="empty", images=True)
    with pytest.raises(PipelineError, match="wrong IDX magic"):
        data.parse_idx(b"PK\x03\x04" + bytes(100), name="zip", images=True)


def test_wrong_image_size(make_idx):
    imgs = torch.zeros(10, 20, 20, dtype=torch.uint8)
    raw = make_idx(imgs)
    assert raw[:16] == bytes.fromhex("00000803" "0000000a" "00000014" "00000014")
    with pytest.raises(PipelineError, match=r"images are \(20, 20\), expected \(28, 28\)") as exc:
        data.parse_idx(raw, name="small", images=True)
    one_line(exc)


def test_image_label_count_mismatch(make_idx):
    imgs = make_idx(torch.zeros(3, 28, 28, dtype=torch.uint8))
    labels = make_idx(torch.tensor([1, 2], dtype=torch.uint8))
    with pytest.raises(PipelineError, match="3 images but 2 labels") as exc:
        data.load_pair(imgs, labels, name="train")
    assert one_line(exc).startswith("train:")


def test_label_out_of_range(make_idx):
    labels = make_idx(torch.tensor([1, 10, 3], dtype=torch.uint8))
    with pytest.raises(PipelineError, match="label 10 out of range 0-9") as exc:
        data.parse_idx(labels, name="labels", images=False)
    one_line(exc)


@pytest.mark.parametrize("n_header, n_data", [(5, 4), (4, 5), (1, 0)])
def test_idx_header_and_data_length_disagree(make_idx, n_header, n_data):
    imgs = torch.zeros(n_data, 28, 28, dtype=torch.uint8)
    raw = make_idx(imgs, dims=(n_header, 28, 28))
    with pytest.raises(PipelineError, match="IDX header and data length disagree") as exc:
        data.parse_idx(raw, name="imgs", images=True)
    one_line(exc)


def test_truncated_real_labels(real_raw):
    raw = real_raw["test_labels"]
    with pytest.raises(PipelineError, match="header and data length disagree"):
        data.parse_idx(raw[:-1], name="t10k labels", images=False)


# ---------------------------------------------------------------- mirrors and download


def test_mirror_list_puts_env_first():
    assert data.mirror_list(environ={}) == list(MNIST.mirrors)
    assert data.mirror_list(environ={"MNIST_MIRROR": "  "}) == list(MNIST.mirrors)
    assert data.mirror_list(environ={"MNIST_MIRROR": "/some/dir"}) == ["/some/dir", *MNIST.mirrors]
    assert data.mirror_list(environ={"MNIST_MIRROR": "/some/dir", "MNIST_MIRROR_ONLY": "1"}) == ["/some/dir"]
    assert data.mirror_list(environ={"MNIST_MIRROR": "/some/dir", "MNIST_MIRROR_ONLY": "0"}) == [
        "/some/dir", *MNIST.mirrors]
    assert len(MNIST.mirrors) >= 2 and all(m.startswith("http") for m in MNIST.mirrors)


def test_mirror_list_reads_the_environment(monkeypatch):
    for var in ("DATASET_MIRROR", "DATASET_MIRROR_ONLY", "MNIST_MIRROR_ONLY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MNIST_MIRROR", "https://example.org/mnist/")
    assert data.mirror_list() == ["https://example.org/mnist/", *MNIST.mirrors]
    monkeypatch.delenv("MNIST_MIRROR")
    assert data.mirror_list() == list(MNIST.mirrors)


def make_mirror(path: Path, files: dict[str, bytes]) -> str:
    path.mkdir(parents=True)
    for key, raw in files.items():
        (path / gz_name(key)).write_bytes(raw)
    return str(path)


@pytest.fixture
def labels_only(monkeypatch):
    """Restrict download() to MNIST's two small label files so per-file logic runs on a few hundred kB."""
    mnist = data.SOURCES["mnist"]
    monkeypatch.setitem(data.SOURCES, "mnist", dataclasses.replace(mnist, files={k: mnist.files[k] for k in SMALL}))


def test_download_all_four_real_files(mnist_dir, tmp_path):
    mirror = make_mirror(tmp_path / "mirror", {k: (mnist_dir / gz_name(k)).read_bytes() for k in MNIST.files})
    dest = tmp_path / "out" / "raw"  # does not exist yet
    out = data.download([mirror], dest)
    assert set(out) == set(MNIST.files)
    for key, (name, md5) in ((k, (f.name, f.raw_md5)) for k, f in MNIST.files.items()):
        assert hashlib.md5(out[key]).hexdigest() == md5  # noqa: S324
        assert (dest / (name + ".gz")).read_bytes() == (Path(mirror) / (name + ".gz")).read_bytes()
    # exactly the four files: no temp files (.*.tmp) left behind
    assert sorted(p.name for p in dest.iterdir()) == sorted(gz_name(k) for k in MNIST.files)
    assert len(out["train_images"]) == 47_040_016


def test_download_falls_back_per_file(labels_only, real_gz, real_raw, tmp_path):
    # mirror A has only the train labels (recompressed, so its bytes differ from B's), B has both
    a_train = gzip.compress(real_raw["train_labels"], compresslevel=1)
    assert a_train != real_gz["train_labels"]
    a = make_mirror(tmp_path / "a", {"train_labels": a_train})
    b = make_mirror(tmp_path / "b", {k: real_gz[k] for k in SMALL})
    dest = tmp_path / "dest"
    out = data.download([a, b], dest)
    assert out == {k: real_raw[k] for k in SMALL}
    assert (dest / gz_name("train_labels")).read_bytes() == a_train  # first mirror wins when it works
    assert (dest / gz_name("test_labels")).read_bytes() == real_gz["test_labels"]  # fell back to B
    assert sorted(p.name for p in dest.iterdir()) == sorted(gz_name(k) for k in SMALL)


def test_download_accepts_file_urls(labels_only, real_gz, tmp_path):
    mirror = make_mirror(tmp_path / "m", {k: real_gz[k] for k in SMALL})
    out = data.download(["file://" + mirror], tmp_path / "dest")
    assert set(out) == set(SMALL)


def test_download_corrupt_first_mirror_falls_through(labels_only, real_gz, real_raw, tmp_path):
    changed = bytearray(real_raw["train_labels"])
    changed[-1] = (changed[-1] + 1) % 10  # still a valid label, but not the published file
    a = make_mirror(tmp_path / "a", {
        "train_labels": gzip.compress(bytes(changed)),  # checksum mismatch
        "test_labels": real_gz["test_labels"][:-100],   # truncated gzip
    })
    b = make_mirror(tmp_path / "b", {k: real_gz[k] for k in SMALL})
    dest = tmp_path / "dest"
    out = data.download([a, b], dest)
    assert out == {k: real_raw[k] for k in SMALL}
    for k in SMALL:
        assert (dest / gz_name(k)).read_bytes() == real_gz[k]
    assert len(list(dest.iterdir())) == 2


def test_download_without_checksums_takes_first_mirror(labels_only, real_gz, real_raw, tmp_path):
    changed = bytearray(real_raw["train_labels"])
    changed[-1] = (changed[-1] + 1) % 10
    a = make_mirror(tmp_path / "a", {"train_labels": gzip.compress(bytes(changed))})
    b = make_mirror(tmp_path / "b", {k: real_gz[k] for k in SMALL})
    out = data.download([a, b], tmp_path / "dest", checksums=False)
    assert out["train_labels"] == bytes(changed)


def test_download_no_mirror_works(labels_only, real_gz, tmp_path):
    empty = make_mirror(tmp_path / "empty", {})
    corrupt = make_mirror(tmp_path / "corrupt", {"train_labels": b"not gzip at all"})
    missing = str(tmp_path / "does-not-exist")
    refused = "http://127.0.0.1:9/mnist/"  # nothing listens on the discard port: connection refused at once
    mirrors = [empty, corrupt, missing, refused]
    dest = tmp_path / "dest"
    with pytest.raises(PipelineError) as exc:
        data.download(mirrors, dest, timeout=5)
    msg = one_line(exc)
    assert msg.startswith("could not get MNIST's train-labels-idx1-ubyte.gz from any mirror")
    for m in mirrors:
        assert m in msg
    assert "not a valid gzip file" in msg
    assert "set MNIST_MIRROR or DATASET_MIRROR to a directory or URL" in msg
    assert not dest.exists() or not any(dest.iterdir())  # nothing half-written


# ---------------------------------------------------------------- split


def ids(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n)  # each "image" is its own index, so the split can be traced
    return x, x % 10


def test_split_sizes_disjoint_and_complete():
    x, y = ids(100)
    s = data.split(x, y, val_size=20, seed=0)
    assert set(s) == {"x_train", "y_train", "x_val", "y_val"}
    assert len(s["x_train"]) == len(s["y_train"]) == 80
    assert len(s["x_val"]) == len(s["y_val"]) == 20
    train, val = set(s["x_train"].tolist()), set(s["x_val"].tolist())
    assert not train & val
    assert train | val == set(range(100))
    assert torch.equal(s["y_train"], s["x_train"] % 10) and torch.equal(s["y_val"], s["x_val"] % 10)
    assert s["x_val"].tolist() != list(range(20))  # shuffled, not the first 20


def test_split_is_deterministic_per_seed():
    x, y = ids(100)
    a, b = data.split(x, y, val_size=20, seed=3), data.split(x, y, val_size=20, seed=3)
    for k in a:
        assert torch.equal(a[k], b[k])
    c = data.split(x, y, val_size=20, seed=4)
    assert not torch.equal(a["x_val"], c["x_val"])


def test_split_limit():
    x, y = ids(1000)
    s = data.split(x, y, val_size=10, seed=0, limit=50)
    assert len(s["x_val"]) == 10 and len(s["x_train"]) == 40
    assert len(set(s["x_train"].tolist()) | set(s["x_val"].tolist())) == 50
    # the limited subset is a random sample, not the first 50 images
    assert max(s["x_train"].tolist() + s["x_val"].tolist()) >= 50


@pytest.mark.parametrize("val_size, limit", [(0, 0), (-1, 0), (100, 0), (150, 0), (50, 50), (60, 50)])
def test_split_bad_val_size(val_size, limit):
    x, y = ids(100)
    with pytest.raises(PipelineError, match=f"val_size={val_size}") as exc:
        data.split(x, y, val_size=val_size, seed=0, limit=limit)
    one_line(exc)


def test_split_on_real_images(t10k):
    x, y = t10k
    s = data.split(x[:500], y[:500], val_size=100, seed=0)
    assert s["x_train"].shape == (400, 28, 28) and s["x_val"].shape == (100, 28, 28)
    assert s["x_train"].dtype == torch.uint8


# ---------------------------------------------------------------- hostile mirrors and files


class _MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` by name. `server.trickle` = "body": answers 200, then one body byte every 0.3 s;
    "headers": sends `HTTP/1.1 200 OK` and then its header line one byte every 0.3 s, never ending the headers;
    "silent": accepts the request and sends nothing."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        if srv.trickle:
            if srv.trickle == "body":
                self.send_response(200)
                self.send_header("Content-Length", str(10**6))
                self.end_headers()
            elif srv.trickle == "headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not srv.stop.is_set():
                try:
                    if srv.trickle != "silent":
                        self.wfile.write(b"\x1f" if srv.trickle == "body" else b"a")
                        self.wfile.flush()
                except OSError:
                    return
                srv.stop.wait(0.3)
            return
        body = srv.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_mirror(monkeypatch):
    """Start loopback HTTP mirrors: `http_mirror(files)` serves files, `http_mirror(trickle="body")` (or
    "headers", "silent") misbehaves; every server is stopped when the test ends."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    servers = []

    def start(files=None, *, trickle="") -> str:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MirrorHandler)
        srv.daemon_threads = True
        srv.files, srv.trickle, srv.stop = files or {}, trickle, threading.Event()
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/mnist/"

    yield start
    for srv in servers:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()


def test_download_over_http(labels_only, real_gz, real_raw, http_mirror, tmp_path):
    url = http_mirror({gz_name(k): real_gz[k] for k in SMALL})
    out = data.download([url], tmp_path / "dest", timeout=10)
    assert out == {k: real_raw[k] for k in SMALL}
    assert (tmp_path / "dest" / gz_name("test_labels")).read_bytes() == real_gz["test_labels"]


@pytest.mark.parametrize("trickle", ["body", "headers", "silent"])
def test_trickling_mirror_hits_the_whole_file_deadline(labels_only, http_mirror, tmp_path, trickle):
    """A mirror that sends a byte every 0.3 s, in its body or in its headers, never trips urllib's per-read
    timeout; the whole-file deadline (download.timeout) covers connect, headers and body and ends it."""
    url = http_mirror(trickle=trickle)
    t0 = time.monotonic()
    with pytest.raises(PipelineError) as exc:
        data.download([url], tmp_path / "dest", timeout=1.0)
    assert time.monotonic() - t0 < 5
    msg = one_line(exc)
    assert url in msg and "no complete file within 1 s (download.timeout)" in msg


def test_trickling_mirror_falls_through_to_the_next(labels_only, real_gz, real_raw, http_mirror, tmp_path):
    slow = http_mirror(trickle="headers")
    good = http_mirror({gz_name(k): real_gz[k] for k in SMALL})
    t0 = time.monotonic()
    out = data.download([slow, good], tmp_path / "dest", timeout=0.8)
    assert out == {k: real_raw[k] for k in SMALL}
    assert time.monotonic() - t0 < 8  # 0.8 s per file on the slow mirror, then the good one


def test_gunzip_capped_reads_concatenated_members_and_padding(real_raw):
    a, b = real_raw["test_labels"][:5000], real_raw["test_labels"][5000:]
    raw = gzip.compress(a) + gzip.compress(b) + bytes(64)
    assert data.gunzip_capped(raw, name="x") == a + b
    with pytest.raises(PipelineError, match="more than 9000 bytes"):
        data.gunzip_capped(raw, name="x", max_bytes=9000)
    with pytest.raises(PipelineError, match="not a valid gzip file"):
        data.gunzip_capped(gzip.compress(a) + b"junk after the member", name="x")


def test_fetch_refuses_a_file_over_the_cap(tmp_path):
    (tmp_path / "big.gz").write_bytes(bytes(5000))
    assert data.fetch(str(tmp_path), "big.gz", max_bytes=5000) == bytes(5000)
    with pytest.raises(PipelineError, match="big.gz at .* is larger than"):
        data.fetch(str(tmp_path), "big.gz", max_bytes=4999)
