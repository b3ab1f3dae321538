"""Hostile input and a hostile environment, through the real stage scripts.

A mirror that trickles, a gzip bomb, a write that fails (file-size limit, full disk), a failure on a stage's last
output, Ctrl-C during training and a checkpoint written by another stage: each ends the stage with one `error:`
line, and no output is created or changed. Each case breaks its own copy of the tiny repository (`repo_copy`).
"""

from __future__ import annotations

import http.server
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from mnistpipe import data
from mnistpipe.errors import PipelineError

NO_PROXY = {"http_proxy": "", "HTTP_PROXY": "", "all_proxy": "", "ALL_PROXY": "", "no_proxy": "127.0.0.1",
            "NO_PROXY": "127.0.0.1"}


def _unchanged(helpers, repo: Path, paths, before: dict) -> None:
    after = helpers.snapshot(repo, paths)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"outputs created or changed: {changed}"
    assert not helpers.temp_files(repo), f"temporary files left behind: {helpers.temp_files(repo)}"


def _popen(helpers, repo: Path, args: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
    # faulthandler: a process that outlives _wait_rusage's timeout gets SIGABRT and prints where every thread was.
    env = {"PYTHONFAULTHANDLER": "1", **(env or {})}
    return subprocess.Popen([sys.executable, *args], cwd=repo, env=helpers.stage_env(repo, env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def _wait_rusage(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, int]:
    """Wait for `proc`; return (exit status, stderr, its own peak RSS in KiB) via os.wait4. Past `timeout`, the
    process is aborted (its stderr then holds its threads' tracebacks, see `_popen`), and killed 10 s later."""
    timers = [threading.Timer(timeout, proc.send_signal, args=(signal.SIGABRT,)),
              threading.Timer(timeout + 10, proc.kill)]
    for timer in timers:
        timer.start()
    try:
        err = proc.stderr.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        for timer in timers:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss


# ---------------------------------------------------------------------------------------------- hostile mirrors


class _Trickle(http.server.BaseHTTPRequestHandler):
    """`server.mode` "body": answers 200 with a 1 MB Content-Length, then sends one body byte every 0.5 s;
    "headers": sends `HTTP/1.1 200 OK` and then a header line one byte every 0.5 s; both until the server stops."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.server.mode == "body":
            self.send_response(200)
            self.send_header("Content-Length", str(10**6))
            self.end_headers()
        else:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not self.server.stop.is_set():
            try:
                self.wfile.write(b"\x1f" if self.server.mode == "body" else b"a")
                self.wfile.flush()
            except OSError:
                return
            self.server.stop.wait(0.5)

    def log_message(self, *args):
        pass


@pytest.fixture(params=["body", "headers"])
def trickle_url(request):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    srv.daemon_threads, srv.stop, srv.mode = True, threading.Event(), request.param
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/mnist/"
    srv.stop.set()
    srv.shutdown()
    srv.server_close()


def test_trickling_mirror_fails_within_the_deadline(repo_copy, helpers, trickle_url):
    """urllib's timeout is per socket read: a byte every 0.5 s, in the body or in the headers, would keep
    `download` waiting for days; the whole-file deadline covers both."""
    helpers.set_param(repo_copy, "download.timeout", 1.5)
    outs = helpers.stage_outputs(repo_copy, "download")
    before = helpers.snapshot(repo_copy, outs)
    t0 = time.monotonic()
    rc, _, err = helpers.run_stage(repo_copy, "download", timeout=180,
                                   env={"MNIST_MIRROR": trickle_url, "MNIST_MIRROR_ONLY": "1", **NO_PROXY})
    elapsed = time.monotonic() - t0
    assert rc == 2, err[-3000:]
    helpers.one_line_error(err, "train-images-idx3-ubyte.gz", trickle_url, "1.5 s (download.timeout)")
    assert elapsed < 90  # the import of torch and the 1.5 s deadline, on a loaded 2-core machine
    _unchanged(helpers, repo_copy, outs, before)


def gzip_bomb(size: int, head: bytes) -> bytes:
    """A valid .gz of `size` bytes (`head`, then zeros) built from one compressed MiB repeated: ~1 MB per GiB.

    After a full flush the compressor starts from an empty window, so every further zero MiB compresses to the
    same bytes: the stream is written without compressing (or holding) the whole expansion.
    """
    block = 2**20
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = head + bytes(block - len(head))
    parts = [c.compress(first) + c.flush(zlib.Z_FULL_FLUSH)]
    zero = bytes(block)
    repeat = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH) == repeat
    crc = zlib.crc32(first)
    for _ in range(size // block - 1):
        crc = zlib.crc32(zero, crc)
    parts += [repeat * (size // block - 1), c.compress(zero[: size % block]), c.flush()]
    crc = zlib.crc32(zero[: size % block], crc)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + b"".join(parts) + struct.pack("<II", crc, size % 2**32)


def idx_image_header(n: int) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in (data.IMAGE_MAGIC, n, data.SIDE, data.SIDE))


GIB = 2**30
BOMB = "train-images-idx3-ubyte"


def test_gzip_bomb_builder_and_the_cap_in_memory():
    """Unit level: the builder makes valid gzip, and the library refuses a 1 GiB bomb within a small peak."""
    import gzip

    small = gzip_bomb(3 * 2**20 + 5, idx_image_header(7))
    assert gzip.decompress(small) == idx_image_header(7) + bytes(3 * 2**20 + 5 - 16)
    bomb = gzip_bomb(GIB, idx_image_header(GIB // 784))
    assert len(bomb) < 2**21
    tracemalloc.start()
    try:
        with pytest.raises(PipelineError) as exc:
            data.decompress_and_verify(bomb, name=BOMB, md5=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(exc.value).startswith(f"{BOMB}.gz decompresses to more than 64 MiB")
    assert peak < 3 * data.MAX_FILE_BYTES  # the 1 GiB expansion was never held


def test_gzip_bomb_is_refused_with_little_memory(repo_copy, helpers, tmp_path):
    """A 1 MB .gz with a valid IDX header that expands to 1 GiB: one line, and the stage's peak memory stays
    within a few hundred MiB of what importing its modules takes (holding the expansion would add a GiB)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{BOMB}.gz").write_bytes(gzip_bomb(GIB, idx_image_header(GIB // 784)))
    env = {"MNIST_MIRROR": str(mirror), "MNIST_MIRROR_ONLY": "1"}
    outs = helpers.stage_outputs(repo_copy, "download")
    before = helpers.snapshot(repo_copy, outs)
    rc, err, peak_kib = _wait_rusage(_popen(helpers, repo_copy, ["stages/download.py"], env))
    assert rc == 2, err[-3000:]
    helpers.one_line_error(err, f"{BOMB}.gz decompresses to more than 64 MiB", str(mirror))
    _unchanged(helpers, repo_copy, outs, before)
    imports = "import sys; sys.path.insert(0, 'stages'); import common, mnistpipe.data, mnistpipe.io"
    rc, err, base_kib = _wait_rusage(_popen(helpers, repo_copy, ["-c", imports], env))
    assert rc == 0, err
    assert (peak_kib - base_kib) / 1024 < 400, f"peak {peak_kib // 1024} MiB, imports alone {base_kib // 1024} MiB"


# ---------------------------------------------------------------------------------------------- failing writes


def test_write_over_the_file_size_limit(repo_copy, helpers):
    """RLIMIT_FSIZE (which stops root too) makes writing add_awgn's 0.5 MB train file fail with EFBIG: one
    line naming the file, exit 2, nothing changed."""
    outs = helpers.stage_outputs(repo_copy, "add_awgn")
    before = helpers.snapshot(repo_copy, outs)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = _popen(helpers, repo_copy, ["stages/add_awgn.py"], {"PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=limit)
    rc, err, _ = _wait_rusage(proc)
    assert rc == 2, err[-3000:]
    helpers.one_line_error(err, "cannot write data/noisy/train.pt", "File too large", "every output is unchanged")
    _unchanged(helpers, repo_copy, outs, before)


# Loaded by the stage's interpreter (sitecustomize on PYTHONPATH): the first os.replace onto a path ending
# in $FAIL_REPLACE_ONTO fails as a full disk would.
SITECUSTOMIZE = """
import errno, os
_real_replace, _failed = os.replace, []
def _replace(src, dst, *args, **kwargs):
    if not _failed and os.fspath(dst).endswith(os.environ["FAIL_REPLACE_ONTO"]):
        _failed.append(dst)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
    return _real_replace(src, dst, *args, **kwargs)
os.replace = _replace
"""


def test_evaluate_outputs_change_together_or_not_at_all(repo_copy, helpers, tmp_path):
    """The disk fills up while evaluate renames its last output (metrics/evaluate.json), after its folder (reports,
    confusion counts and dvclive's confusion rows) is already in place: both go back to their previous bytes, and
    the stage says so in one line."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    outs = ["metrics/evaluate", "metrics/evaluate.json"]
    assert set(outs) <= set(helpers.stage_outputs(repo_copy, "evaluate"))
    before = helpers.snapshot(repo_copy, outs)
    assert {"metrics/evaluate/confusion.json", "metrics/evaluate/plots/sklearn/tuned.json",
            "metrics/evaluate.json"} <= set(before)
    time.sleep(0.01)
    env = {"FAIL_REPLACE_ONTO": "metrics/evaluate.json",
           "PYTHONPATH": os.pathsep.join([str(site), str(repo_copy / "src")])}
    rc, _, err = helpers.run_stage(repo_copy, "evaluate", env=env)
    assert rc == 2, err[-3000:]
    helpers.one_line_error(err, "cannot write metrics/evaluate.json", "No space left on device",
                           "free some disk space", "every output of this run was put back")
    _unchanged(helpers, repo_copy, outs, before)


# ---------------------------------------------------------------------------------------------- Ctrl-C


def _long_training(helpers, repo: Path) -> tuple[list[str], dict]:
    """Make train_baseline run far longer than a test waits; return its outputs and their snapshot."""
    helpers.set_param(repo, "epochs", 40)
    outs = helpers.stage_outputs(repo, "train_baseline")
    return outs, helpers.snapshot(repo, outs)


def _wait_for_first_epoch(proc: subprocess.Popen, repo: Path, what: str) -> None:
    """Until dvclive has written train_baseline's first epoch into its temporary log folder."""
    deadline = time.monotonic() + 240
    while not list((repo / "metrics").glob(".train_baseline.*.tmp/plots/metrics/*.tsv")):
        assert proc.poll() is None, f"{what} ended ({proc.returncode}) before it was interrupted"
        assert time.monotonic() < deadline, "training never logged an epoch"
        time.sleep(0.05)


def test_ctrl_c_during_training_is_one_line_and_changes_nothing(repo_copy, helpers):
    """SIGINT once the first epoch is logged: exit 130, one `error: interrupted ...` line, no traceback, and
    the checkpoint and logs as they were."""
    outs, before = _long_training(helpers, repo_copy)
    # A suite started in the background (`nohup ... &`) passes SIGINT on ignored, and Python then keeps it ignored:
    # the child gets the default disposition back, as a stage started from a terminal has it.
    proc = _popen(helpers, repo_copy, ["stages/train_baseline.py"],
                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_first_epoch(proc, repo_copy, "train_baseline")
        proc.send_signal(signal.SIGINT)
        rc, err, _ = _wait_rusage(proc, timeout=120)
    finally:
        if proc.poll() is None and proc.returncode is None:
            proc.kill()
    assert rc == 130, err[-3000:]
    assert "Traceback" not in err
    helpers.one_line_error(err, "error: interrupted", "every output is unchanged")
    _unchanged(helpers, repo_copy, outs, before)


def test_ctrl_c_under_dvc_repro_says_the_outputs_are_gone_and_how_to_get_them_back(repo_copy, helpers):
    """Under `dvc repro` DVC removes a stage's outputs before running it: the interrupted stage says so (not
    "unchanged") and names `dvc checkout <stage>` and `git restore`, which bring the previous outputs back byte for
    byte."""
    outs, before = _long_training(helpers, repo_copy)
    # Its own session, so the test can Ctrl-C the whole process group as a terminal does.
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", "train_baseline"], cwd=repo_copy,
                            env=helpers.stage_env(repo_copy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_first_epoch(proc, repo_copy, "dvc repro")
        assert not (repo_copy / "models/baseline.pt").exists()  # DVC removed it before starting the stage
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = out.decode()
    line = next((ln for ln in out.splitlines() if ln.startswith("error: interrupted")), None)
    assert line is not None, out[-3000:]
    assert "unchanged" not in line and "`dvc checkout train_baseline`" in line, line
    assert "`git restore`" in line
    helpers.dvc(repo_copy, "checkout", "train_baseline", check=True)
    assert (repo_copy / "models/baseline.pt").is_file()
    helpers.git(repo_copy, "restore", ".")  # the uncached metrics and plots (and params.yaml's epochs)
    after = helpers.snapshot(repo_copy, outs)
    assert {k: h for k, (_, h) in after.items()} == {k: h for k, (_, h) in before.items()}  # same bytes, new mtimes
    assert not helpers.temp_files(repo_copy), helpers.temp_files(repo_copy)


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_written_by_another_stage_is_refused(repo_copy, helpers):
    """models/tuned.pt copied over models/baseline.pt was scored as the baseline."""
    shutil.copyfile(repo_copy / "models/tuned.pt", repo_copy / "models/baseline.pt")
    outs = helpers.stage_outputs(repo_copy, "evaluate")
    before = helpers.snapshot(repo_copy, outs)
    rc, _, err = helpers.run_stage(repo_copy, "evaluate")
    assert rc == 2, err[-3000:]
    helpers.one_line_error(err, "models/baseline.pt was written by select_cnn, not train_baseline",
                           "rerun `dvc repro train_baseline`")
    _unchanged(helpers, repo_copy, outs, before)
