"""mnistpipe.runner.run_stage: user errors are one line and exit 2; bugs keep their traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mnistpipe import io
from mnistpipe import runner as runner_module
from mnistpipe.errors import PipelineError, describe_os_error
from mnistpipe.runner import TRACEBACK_ENV, run_stage

REPO_ROOT = Path(__file__).resolve().parents[2]


def raise_user_error() -> None:
    raise PipelineError("data/raw is missing:\n  run `dvc repro download`\n\tfirst")


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.setattr(sys, "argv", ["stage.py"])


def test_user_error_is_one_line_and_exit_2(clean_env, capsys):
    with pytest.raises(SystemExit) as exc:
        run_stage(raise_user_error)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: data/raw is missing: run `dvc repro download` first\n"


def test_success_prints_one_resource_line(clean_env, capsys):
    calls = []
    run_stage(lambda: calls.append(1))
    assert calls == [1]
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and "done in" in err and "peak memory" in err and "MiB" in err


@pytest.mark.parametrize("exc_type", [ValueError, KeyError, ZeroDivisionError])
def test_other_exceptions_propagate(clean_env, capsys, exc_type):
    def bug() -> None:
        raise exc_type("a bug")

    with pytest.raises(exc_type):
        run_stage(bug)
    assert capsys.readouterr().err == ""  # not turned into an "error:" line


@pytest.mark.parametrize("value", ["1", "yes"])
def test_traceback_env_shows_traceback(clean_env, monkeypatch, capsys, value):
    monkeypatch.setenv(TRACEBACK_ENV, value)
    with pytest.raises(SystemExit) as exc:
        run_stage(raise_user_error)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "raise_user_error" in err and "PipelineError" in err
    assert err.splitlines()[-1] == "error: data/raw is missing: run `dvc repro download` first"


def test_traceback_env_zero_means_off(clean_env, monkeypatch, capsys):
    monkeypatch.setenv(TRACEBACK_ENV, "0")
    with pytest.raises(SystemExit):
        run_stage(raise_user_error)
    assert "Traceback" not in capsys.readouterr().err


def test_traceback_flag(clean_env, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["stage.py", "--traceback"])
    with pytest.raises(SystemExit):
        run_stage(raise_user_error)
    assert capsys.readouterr().err.startswith("Traceback (most recent call last):")


SCRIPT = """
import sys
from mnistpipe.errors import PipelineError
from mnistpipe.runner import run_stage

def main():
    if sys.argv[1] == "user":
        raise PipelineError("bad value\\nfor key x")
    raise ValueError("internal bug")

run_stage(main)
"""


def run_script(kind: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != TRACEBACK_ENV} | env
    return subprocess.run([sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, env=environ,
                          timeout=60)


def test_process_user_error_exit_2():
    p = run_script("user")
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr == "error: bad value for key x\n"


def test_process_bug_exit_1_with_traceback():
    p = run_script("bug")
    assert p.returncode == 1
    assert p.stderr.startswith("Traceback (most recent call last):")
    assert p.stderr.rstrip().endswith("ValueError: internal bug")
    assert not any(line.startswith("error:") for line in p.stderr.splitlines())


def test_process_user_error_with_traceback_env():
    p = run_script("user", **{TRACEBACK_ENV: "1"})
    assert p.returncode == 2
    assert "Traceback (most recent call last):" in p.stderr
    assert p.stderr.splitlines()[-1] == "error: bad value for key x"


def test_stage_with_a_typo_in_params(tmp_path):
    """End to end: the validate_params stage run on a params.yaml with a typo prints one line and exits 2."""
    text = (REPO_ROOT / "params.yaml").read_text().replace("\ndropout:", "\ndroput:", 1)
    (tmp_path / "params.yaml").write_text(text)
    environ = {k: v for k, v in os.environ.items() if k != TRACEBACK_ENV}
    p = subprocess.run([sys.executable, str(REPO_ROOT / "stages" / "validate_params.py")], cwd=tmp_path,
                       capture_output=True, text=True, env=environ, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: params.yaml: unknown key 'droput' (did you mean 'dropout'?)")


def test_os_errors_name_a_fix():
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system")).startswith(
        "Read-only file system (the file system is read-only")
    assert "free some disk space" in describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
    assert "check that the location is writable" in describe_os_error(OSError(errno.ENXIO, "No such device"))


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device", "out/m.json"),
                                 PermissionError(errno.EPERM, "Operation not permitted", "out/m.json")])
def test_write_os_error_is_one_line_and_exit_2(clean_env, capsys, exc):
    def full_disk() -> None:
        raise exc

    with pytest.raises(SystemExit) as stop:
        run_stage(full_disk)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot access out/m.json: {exc.strerror} (")


def test_a_missing_file_in_stage_code_stays_a_bug(clean_env, capsys):
    def bug() -> None:
        open("/nonexistent/dir/file")  # noqa: SIM115

    with pytest.raises(FileNotFoundError):
        run_stage(bug)
    assert capsys.readouterr().err == ""


def test_keyboard_interrupt_is_one_line_and_exit_130(clean_env, capsys, tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")

    def interrupted() -> None:
        io.write_text(target, "new")
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        run_stage(interrupted)
    assert stop.value.code == 130
    assert capsys.readouterr().err == ("error: interrupted (Ctrl-C) before writing anything; every output is "
                                       "unchanged; rerun the stage to finish it\n")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_under_dvc_repro_a_failure_says_dvc_removed_the_outputs(clean_env, capsys, monkeypatch):
    """DVC removes a stage's outputs before running it (and sets DVC_STAGE): no "unchanged" promise, and the
    commands that bring the outputs back."""
    monkeypatch.setenv("DVC_STAGE", "train_baseline")

    def interrupted() -> None:
        raise KeyboardInterrupt

    def bad_input() -> None:
        raise PipelineError("data/prepared/train.pt is missing; run `dvc repro download`")

    for main, status in ((interrupted, 130), (bad_input, 2)):
        with pytest.raises(SystemExit) as stop:
            run_stage(main)
        assert stop.value.code == status
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "unchanged" not in err, err
        assert "dvc repro removed this stage's outputs" in err and "`dvc checkout train_baseline`" in err, err


def test_run_stage_commits_outputs_together(clean_env, capsys, tmp_path):
    seen = []

    def stage() -> None:
        io.write_text(tmp_path / "a.txt", "a")
        io.write_text(tmp_path / "b.txt", "b")
        seen.append(sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")))

    run_stage(stage)
    assert seen == [[]]  # nothing in place while the stage ran
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "b.txt").read_text() == "b"


# ---------------------------------------------------------------- beyond Linux


class _Usage:
    ru_maxrss = 3 * 2**20


class _Resource:
    RUSAGE_SELF = 0

    @staticmethod
    def getrusage(_who):
        return _Usage()


@pytest.mark.parametrize("platform, mib", [("linux", 3 * 1024), ("darwin", 3)])
def test_peak_memory_units(monkeypatch, platform, mib):
    """ru_maxrss counts KiB on Linux but bytes on macOS; both must come out in MiB."""
    monkeypatch.setattr(runner_module, "resource", _Resource)
    monkeypatch.setattr(sys, "platform", platform)
    assert runner_module.peak_memory_mib() == mib


def test_peak_memory_without_resource_asks_psutil(monkeypatch):
    """Windows has no `resource` module; psutil's peak working set stands in for ru_maxrss."""
    class Process:
        def memory_info(self):
            return types.SimpleNamespace(peak_wset=5 * 2**20)

    monkeypatch.setattr(runner_module, "resource", None)
    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(Process=Process))
    assert runner_module.peak_memory_mib() == 5


def test_stages_run_where_the_resource_module_does_not_exist():
    """Every stage imports mnistpipe.runner: without `resource` (Windows) it must import and report success."""
    code = ("import sys; sys.modules['resource'] = None; sys.argv = ['stage.py']\n"
            "from mnistpipe import runner\n"
            "assert runner.resource is None\n"
            "runner.run_stage(lambda: None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    assert done.returncode == 0, done.stderr
    # Linux's psutil has no peak working set: the line leaves the memory out rather than guess it.
    assert done.stderr.startswith("stage: done in ") and "MiB" not in done.stderr, done.stderr
