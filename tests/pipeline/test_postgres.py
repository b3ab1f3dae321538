"""tune_cnn against a real PostgreSQL server: two local worker processes fill one Optuna study.

The server is the Debian `postgresql` package (`.ci/run` installs it when missing), started here in a temporary
data directory on a free port, as an unprivileged user when the tests run as root (initdb refuses root), and
stopped and removed afterwards, also when the test fails. Without the server binaries or the psycopg2 driver
(`pip install -e '.[postgres]'`) the test skips with the reason, and fails under CI (`helpers.need`), where
`.ci/run` installs both.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# Debian installs the server programs outside PATH, one folder per major version.
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    dirs = [Path(d) for d in glob.glob(DEBIAN_BINDIRS) if (Path(d) / "pg_ctl").is_file()]
    return max(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0, default=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int, wait: float = 0.0) -> bool:
    """Whether `pid` still runs after up to `wait` s (a zombie, exited but not yet reaped, counts as gone)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X") or time.monotonic() >= deadline:
            return state not in ("Z", "X")
        time.sleep(0.2)


@contextlib.contextmanager
def postgres_server(need):
    """Yield (url, info) of a throwaway server; stop it (by its pid if pg_ctl cannot) and delete its files."""
    bindir = _bindir()
    need(bindir, "PostgreSQL server programs (initdb, pg_ctl) not found; install the Debian package postgresql")
    need(importlib.util.find_spec("psycopg2"), "the psycopg2 driver is missing; run pip install -e '.[postgres]'")
    root = Path(tempfile.mkdtemp(prefix="mnistpipe-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        as_user = ["runuser", "-u", "nobody", "--"]
        os.chown(root, *_nobody())
    root.chmod(0o755)
    datadir, log, port = root / "data", root / "server.log", _free_port()
    info = {"root": root, "pid": None}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)

    try:
        proc = run(str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync")
        assert proc.returncode == 0, f"initdb failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        proc = run(str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-l", str(log), "-w", "-t", "60",
                   "start")
        pidfile = datadir / "postmaster.pid"
        if pidfile.is_file():
            info["pid"] = int(pidfile.read_text().split()[0])
        assert proc.returncode == 0, (f"pg_ctl start failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n"
                                      f"{log.read_text()[-2000:] if log.is_file() else ''}")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres", info
    finally:
        if info["pid"] and _alive(info["pid"]):
            run(str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "-t", "30", "stop")
            if _alive(info["pid"], wait=10):
                os.kill(info["pid"], signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _nobody() -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def test_four_workers_fill_one_postgres_study(repo_copy, helpers):
    """Four worker processes (on a 2-core machine: more than the cores) against one PostgreSQL study: every trial is
    told once (none failed, none left running or waiting), each worker adds trials, and the stage reports the
    study's best."""
    import optuna

    repo = repo_copy
    t0 = time.perf_counter()
    with postgres_server(helpers.need) as (url, info):
        helpers.set_param(repo, "tune_cnn.storage", url)
        helpers.set_param(repo, "tune_cnn.n_workers", 4)
        helpers.set_param(repo, "tune_cnn.n_trials", 8)
        helpers.set_param(repo, "tune_cnn.budget", 8)  # 8 one-epoch trials
        rc, _, err = helpers.run_stage(repo, "tune_cnn", timeout=300)
        assert rc == 0, err[-3000:]

        study = optuna.load_study(study_name="tune_cnn", storage=url)
        trials = study.get_trials(deepcopy=False)
        # Workers that check the cap at the same moment may each start one more trial (tune.run_trials says so).
        assert 8 <= len(trials) <= 11, [t.state for t in trials]
        told = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
        assert all(t.state in told for t in trials), [t.state for t in trials]
        workers = {t.user_attrs.get("worker") for t in trials}
        assert len(workers) == 4 and None not in workers, f"trials should come from four workers: {workers}"

        best = json.loads((repo / "models/search_best.json").read_text())
        recipe = helpers.read_params(repo)["recipe"]
        assert best["hyperparameters"] == {**study.best_params, **recipe}
        assert best["best_trial_val_acc"] == pytest.approx(study.best_value)
        lines = (repo / "metrics/tune_cnn_trials.csv").read_text().strip().splitlines()
        assert len(lines) == 1 + len(trials)

        # The same command again finds the study full: no new trial, the same best configuration.
        rc, _, err = helpers.run_stage(repo, "tune_cnn", timeout=300)
        assert rc == 0, err[-3000:]
        assert len(optuna.load_study(study_name="tune_cnn", storage=url).trials) == len(trials)
        assert json.loads((repo / "models/search_best.json").read_text())["hyperparameters"] == best[
            "hyperparameters"]
        pid = info["pid"]
        assert pid and _alive(pid)
    assert not _alive(pid, wait=10), f"the PostgreSQL server (pid {pid}) still runs"
    assert not info["root"].exists(), f"{info['root']} was not removed"
    helpers.TIMINGS["postgres: four workers, 8 trials"] = time.perf_counter() - t0


def test_unreachable_storage_is_one_line_and_changes_nothing(repo_copy, helpers):
    repo = repo_copy
    helpers.set_param(repo, "tune_cnn.storage", f"postgresql+psycopg2://postgres@127.0.0.1:{helpers.closed_port()}/x")
    outs = helpers.stage_outputs(repo, "tune_cnn")
    before = helpers.snapshot(repo, outs)
    rc, _, err = helpers.run_stage(repo, "tune_cnn")
    assert rc == 2, err[-3000:]
    helpers.one_line_error(err, "cannot open the Optuna storage", "tune_cnn.storage")
    assert helpers.snapshot(repo, outs) == before
