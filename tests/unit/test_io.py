"""mnistpipe.io: atomic writes, missing inputs that name their producer stage, tensor files."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch

from mnistpipe import io, transaction
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


# ---------------------------------------------------------------- transactions (all outputs or none)


def _outputs(tmp_path):
    """Three earlier outputs: two files and a folder, as a stage like evaluate leaves them."""
    a, b, d = tmp_path / "a.json", tmp_path / "sub" / "b.txt", tmp_path / "plots"
    b.parent.mkdir()
    d.mkdir()
    a.write_text("old a")
    b.write_text("old b")
    (d / "p.json").write_text("old p")
    return a, b, d


def test_transaction_renames_only_at_the_end(tmp_path):
    a, b, d = _outputs(tmp_path)
    with transaction.transaction() as txn:
        io.write_text(a, "new a")
        with io.atomic_dir(d) as tmp:
            io.write_text(tmp / "inner" / "p.json", "new p")  # inside a pending folder: renamed within it at once
            assert (tmp / "inner" / "p.json").read_text() == "new p"
        io.write_text(b, "new b")
        assert (a.read_text(), b.read_text(), listing(d)) == ("old a", "old b", ["p.json"])
        assert [p.shown for p in txn.pending] == [str(a), str(d), str(b)]  # the folder's content is not listed
    assert txn.committed
    assert (a.read_text(), b.read_text(), (d / "inner" / "p.json").read_text()) == ("new a", "new b", "new p")
    assert listing(tmp_path) == ["a.json", "plots", "sub"] and listing(b.parent) == ["b.txt"]


@pytest.mark.parametrize("exc_type", [Boom, KeyboardInterrupt])
def test_transaction_that_fails_changes_nothing(tmp_path, exc_type):
    a, b, d = _outputs(tmp_path)
    with pytest.raises(exc_type):
        with transaction.transaction():
            io.write_text(a, "new a")
            with io.atomic_dir(d) as tmp:
                (tmp / "q.json").write_text("new q")
            io.write_text(tmp_path / "brand-new.txt", "x")
            raise exc_type
    assert (a.read_text(), b.read_text(), listing(d)) == ("old a", "old b", ["p.json"])
    assert listing(tmp_path) == ["a.json", "plots", "sub"]  # no temporaries, nothing new


@pytest.mark.parametrize("first_is_new", [False, True])
def test_failed_commit_puts_every_output_back(tmp_path, first_is_new):
    """The last output cannot be renamed (a non-empty folder stands where the file goes, which stops root too):
    the outputs renamed before it go back to their previous versions, and nothing is left behind."""
    a, b, d = _outputs(tmp_path)
    if first_is_new:
        a.unlink()
    blocker = tmp_path / "last.json"
    blocker.mkdir()
    (blocker / "keep").write_text("mine")
    with pytest.raises(PipelineError) as exc:
        with transaction.transaction():
            io.write_text(a, "new a")
            with io.atomic_dir(d) as tmp:
                (tmp / "q.json").write_text("new q")
            io.write_text(b, "new b")
            io.write_json(blocker, {"x": 1})
    msg = str(exc.value)
    assert "\n" not in msg and f"cannot write {blocker}" in msg and "Is a directory" in msg
    assert "put back to its previous version" in msg
    assert a.exists() is not first_is_new and (first_is_new or a.read_text() == "old a")
    assert (b.read_text(), listing(d), (d / "p.json").read_text()) == ("old b", ["p.json"], "old p")
    assert (blocker / "keep").read_text() == "mine"
    assert listing(tmp_path) == sorted(["plots", "sub", "last.json"] + ([] if first_is_new else ["a.json"]))
    assert listing(b.parent) == ["b.txt"]


def test_transaction_second_write_of_an_output_wins(tmp_path):
    target = tmp_path / "m.json"
    with transaction.transaction() as txn:
        io.write_text(target, "first")
        io.write_text(target, "second")
        assert len(txn.pending) == 1
    assert target.read_text() == "second" and listing(tmp_path) == ["m.json"]


def test_ctrl_c_during_the_commit_waits_until_it_is_done(tmp_path, monkeypatch):
    """SIGINT is held back while renaming: the interrupt arrives once every output is in place, never between."""
    a, b, _ = _outputs(tmp_path)
    real_replace, calls = os.replace, []

    def replace_and_interrupt(src, dst):
        calls.append(dst)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_and_interrupt)
    # Python's own SIGINT handler, whatever the suite inherited (a background job starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with transaction.transaction() as txn:
                io.write_text(a, "new a")
                io.write_text(b, "new b")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert txn.committed and len(calls) == 4  # both old versions moved aside, both new ones renamed in
    assert (a.read_text(), b.read_text()) == ("new a", "new b")


def test_leftovers_of_a_killed_commit_are_cleaned_by_the_next_write(tmp_path):
    """A commit killed between moving the old version aside and renaming the new one in leaves `.NAME.old` and
    no NAME: the next write brings the old version back before replacing it, and removes every leftover."""
    target, other = tmp_path / "m.json", tmp_path / "n.json"
    (tmp_path / ".m.json.old").write_text("previous")
    (tmp_path / ".m.json.abc123.tmp").write_text("half")
    other.write_text("current")
    (tmp_path / ".n.json.old").write_text("older")
    with pytest.raises(Boom), io.atomic_path(target):
        raise Boom
    assert target.read_text() == "previous"  # the killed run's previous version is back
    io.write_text(other, "newest")
    assert listing(tmp_path) == ["m.json", "n.json"] and other.read_text() == "newest"


def test_os_error_while_writing_is_one_line_user_error(tmp_path):
    target = tmp_path / "m.json"
    target.write_text("old")
    with pytest.raises(PipelineError) as exc:
        with io.atomic_path(target) as tmp:
            tmp.write_text("part")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(exc.value) == (f"cannot write {target}: No space left on device (free some disk space and rerun); "
                              "every output is unchanged")
    assert listing(tmp_path) == ["m.json"] and target.read_text() == "old"


PAUSE_SCRIPT = """
import sys
from mnistpipe import io, transaction
if sys.argv[1] == "transaction":
    with transaction.transaction():
        io.write_text("a.json", "new a")
        with io.atomic_dir("plots") as tmp:
            io.write_text(tmp / "p.json", "new p")
else:
    io.write_text("a.json", "new a")
print("renamed")
"""


@pytest.mark.parametrize("mode", ["transaction", "single"])
def test_pause_hook_fires_with_nothing_renamed(tmp_path, mode, helpers):
    """The pause hook of the kill tests (tests/hooks/pause_before_commit): the marker lists the outputs while every
    temporary is written and no output is renamed yet; a SIGKILL then leaves the previous outputs as they were."""
    (tmp_path / "a.json").write_text("old a")
    marker = tmp_path / "paused"
    env = {**os.environ, **helpers.pause_env(None, marker)}
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_SCRIPT, mode], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"no marker (exit {proc.poll()}): {proc.stderr.read() if proc.poll() else ''}"
        expected = ["a.json", "plots"] if mode == "transaction" else ["a.json"]
        assert marker.read_text().splitlines() == expected
        assert (tmp_path / "a.json").read_text() == "old a" and not (tmp_path / "plots").exists()
        temps = sorted(p.name.split(".")[1] for p in tmp_path.glob(".*.tmp"))
        assert temps == (["a", "plots"] if mode == "transaction" else ["a"])
        assert proc.poll() is None  # still asleep in the window
    finally:
        proc.kill()
        proc.wait()
    assert proc.stdout.read() == b""
    assert (tmp_path / "a.json").read_text() == "old a"
