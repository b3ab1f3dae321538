"""mnistpipe.io: atomic writes, missing inputs that name their producer stage, tensor files."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from mnistpipe import io
from mnistpipe.errors import PipelineError


class Boom(Exception):
    pass


def listing(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------- atomic_path


def test_atomic_path_success_replaces_content(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with io.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert tmp.name.startswith(".out.json.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible until the block ends
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["out.json"]


def test_atomic_path_failure_keeps_old_content(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(Boom):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise Boom
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.json"]  # no temp file remains


def test_atomic_path_failure_creates_nothing(tmp_path):
    target = tmp_path / "new" / "out.pt"
    with pytest.raises(Boom):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise Boom
    assert not target.exists()
    assert listing(target.parent) == []


def test_atomic_path_creates_parent_dirs(tmp_path):
    io.write_text(tmp_path / "a" / "b" / "c.txt", "hello")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "hello"


@pytest.mark.parametrize("writer", [
    lambda p: io.write_text(p, "x"),
    lambda p: io.write_json(p, {"a": 1}),
    lambda p: io.save_tensors(p, {"x": torch.zeros(1)}),
])
@pytest.mark.parametrize("below", ["out.json", "sub/out.json"])
def test_unwritable_location_is_one_line_user_error(tmp_path, writer, below):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a directory")
    target = blocker / below
    with pytest.raises(PipelineError, match="cannot write") as exc:
        writer(target)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(target) in msg
    assert blocker.read_text() == "I am a file, not a directory"


def test_atomic_dir_unwritable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(PipelineError, match="cannot write") as exc:
        with io.atomic_dir(blocker / "plots"):
            pass
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- atomic_dir


def test_atomic_dir_success_replaces_the_directory(tmp_path):
    target = tmp_path / "plots"
    target.mkdir()
    (target / "old.png").write_text("old")
    with io.atomic_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and tmp != target
        (tmp / "new.png").write_text("new")
        assert listing(target) == ["old.png"]
    assert listing(target) == ["new.png"]
    assert (target / "new.png").read_text() == "new"
    assert listing(tmp_path) == ["plots"]  # no .tmp or .old directory left


def test_atomic_dir_success_when_target_is_new(tmp_path):
    target = tmp_path / "deep" / "plots"
    with io.atomic_dir(target) as tmp:
        (tmp / "f.txt").write_text("x")
    assert listing(target) == ["f.txt"]
    assert listing(target.parent) == ["plots"]


def test_atomic_dir_failure_keeps_the_old_directory(tmp_path):
    target = tmp_path / "plots"
    target.mkdir()
    (target / "old.png").write_text("old")
    with pytest.raises(Boom):
        with io.atomic_dir(target) as tmp:
            (tmp / "new.png").write_text("new")
            raise Boom
    assert listing(target) == ["old.png"]
    assert (target / "old.png").read_text() == "old"
    assert listing(tmp_path) == ["plots"]


# ---------------------------------------------------------------- require, JSON and tensor files


def test_require_names_the_producer(tmp_path):
    present = tmp_path / "here.txt"
    present.write_text("")
    assert io.require(present, producer="download") == present
    with pytest.raises(PipelineError, match=r"missing input .*nope\.pt: run `dvc repro download` first"):
        io.require(tmp_path / "nope.pt", producer="download")


def test_load_tensors_missing_file(tmp_path):
    with pytest.raises(PipelineError, match="dvc repro add_awgn") as exc:
        io.load_tensors(tmp_path / "noisy" / "train.pt", producer="add_awgn")
    assert "missing input" in str(exc.value)


def test_tensors_round_trip(tmp_path):
    path = tmp_path / "t.pt"
    x = torch.arange(12, dtype=torch.uint8).view(3, 4)
    io.save_tensors(path, {"x": x, "n": 3, "name": "train"})
    out = io.load_tensors(path, producer="download")
    assert torch.equal(out["x"], x) and out["x"].dtype == torch.uint8
    assert out["n"] == 3 and out["name"] == "train"
    assert listing(tmp_path) == ["t.pt"]


def test_load_tensors_corrupt(tmp_path):
    path = tmp_path / "t.pt"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(PipelineError, match=r"corrupt or not a tensor file.*dvc repro download"):
        io.load_tensors(path, producer="download")


def test_json_round_trip_and_errors(tmp_path):
    path = tmp_path / "m.json"
    io.write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text().endswith("\n")
    assert list(json.loads(path.read_text())) == ["b", "a"]  # key order kept
    assert io.read_json(path, producer="evaluate") == {"b": 1, "a": [1, 2]}
    path.write_text("{not json")
    with pytest.raises(PipelineError, match=r"not valid JSON .*dvc repro evaluate"):
        io.read_json(path, producer="evaluate")
    with pytest.raises(PipelineError, match="dvc repro tune_cnn"):
        io.read_json(tmp_path / "missing.json", producer="tune_cnn")


def test_atomic_output_gets_the_usual_permissions(tmp_path):
    """mkstemp makes 0600 files; a finished output must get 0666 minus the umask, like a plain open() would."""
    old = os.umask(0o022)
    try:
        io.write_text(tmp_path / "a.txt", "x")
        os.umask(0o002)
        io.save_tensors(tmp_path / "b.pt", {"x": torch.zeros(1)})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.pt").stat().st_mode) == 0o664
