"""Bad MNIST files through the real download stage: exit 2, one `error:` line naming the file and the problem,
and no output created or changed (data/raw, the prepared files and the metrics stay as they were).

The mirror is a temporary folder holding the real files with one of them broken; MNIST_MIRROR_ONLY=1 keeps the
public mirrors out, so the result does not depend on whether this machine reaches the internet.
"""

from __future__ import annotations

import gzip
import shutil
import struct

import pytest

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _labels(raw: bytes, *, count: int | None = None, patch: dict[int, int] | None = None,
            magic: int = 0x801) -> bytes:
    body = bytearray(raw[8:])
    for i, v in (patch or {}).items():
        body[i] = v
    if count is not None:
        body = body[:count]
    return struct.pack(">II", magic, len(body)) + bytes(body)


def _mirror(tmp_path, helpers, name: str, content: bytes | None, *, gzipped: bool = True):
    """A copy of the real mirror with file `name` replaced by `content` (None: removed)."""
    src = helpers.require_mirror()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in FILES:
        shutil.copyfile(src / f"{f}.gz", mirror / f"{f}.gz")
    target = mirror / f"{name}.gz"
    if content is None:
        target.unlink()
    else:
        target.write_bytes(gzip.compress(content) if gzipped else content)
    return mirror


def _real(helpers, name: str) -> bytes:
    return gzip.decompress((helpers.require_mirror() / f"{name}.gz").read_bytes())


def _expect(helpers, repo, mirror, *needles: str) -> str:
    watched = helpers.stage_outputs(repo, "download") + helpers.stage_metrics(repo, "download")
    before = helpers.snapshot(repo, watched)
    rc, _, err = helpers.run_stage(repo, "download", env={"MNIST_MIRROR": str(mirror), "MNIST_MIRROR_ONLY": "1"})
    after = helpers.snapshot(repo, watched)
    assert rc == 2, f"download exited {rc}; stderr:\n{err[-3000:]}"
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"download changed outputs {changed}"
    assert not helpers.temp_files(repo), helpers.temp_files(repo)
    return helpers.one_line_error(err, *needles)


LABELS = "t10k-labels-idx1-ubyte"


@pytest.mark.parametrize("case", ["missing file", "truncated gzip", "not gzip", "checksum mismatch"])
def test_bad_file_with_checksums(repo_copy, helpers, tmp_path, case):
    real = (helpers.require_mirror() / f"{LABELS}.gz").read_bytes()
    content, gzipped, needle = {
        "missing file": (None, True, "No such file"),
        "truncated gzip": (real[: len(real) // 2], False, "truncated"),
        "not gzip": (b"<html>not found</html>", False, "not a valid gzip file"),
        "checksum mismatch": (_labels(_real(helpers, LABELS), patch={0: 1}), True, "checksum mismatch"),
    }[case]
    mirror = _mirror(tmp_path, helpers, LABELS, content, gzipped=gzipped)
    # A file that arrived but failed its checksum names the check's switch; any other failure, the mirror variable.
    fix = "download.verify_md5" if case == "checksum mismatch" else "MNIST_MIRROR"
    _expect(helpers, repo_copy, mirror, "could not get", LABELS, needle, fix)


@pytest.mark.parametrize("case", ["wrong magic", "wrong image size", "count mismatch", "label out of range"])
def test_bad_idx_content(repo_copy, helpers, tmp_path, case):
    """With verify_md5 off (IDX drop-ins such as Fashion-MNIST), the parser itself must catch broken content."""
    helpers.set_param(repo_copy, "download.verify_md5", False)
    labels = _real(helpers, LABELS)
    if case == "wrong image size":
        name = "t10k-images-idx3-ubyte"
        content = struct.pack(">IIII", 0x803, 10000, 20, 20) + bytes(10000 * 400)
        needles = ("test images", "(20, 20)", "(28, 28)")
    else:
        name = LABELS
        content, needles = {
            "wrong magic": (_labels(labels, magic=0x803), ("test labels", "wrong IDX magic")),
            "count mismatch": (_labels(labels, count=9999), ("10000 images but 9999 labels",)),
            "label out of range": (_labels(labels, patch={5: 10}), ("test labels", "label 10 out of range")),
        }[case]
    _expect(helpers, repo_copy, _mirror(tmp_path, helpers, name, content), *needles)
