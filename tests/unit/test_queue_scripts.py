"""scripts/queue_common.sh: the queue scripts stop with one line when experiments are queued but no worker runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
STATUS = """Task     Name        Created    Status
0f3a1c2  exp-1       10:00 AM   Queued

Worker status: {active} active, {idle} idle
"""


@pytest.mark.parametrize("active, idle, ok", [(0, 0, False), (1, 0, True), (0, 1, True)])
def test_require_workers(tmp_path, active, idle, ok):
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat <<'END'\n{STATUS.format(active=active, idle=idle)}END\n")
    fake.chmod(0o755)
    script = f'. "{REPO_ROOT / "scripts" / "queue_common.sh"}"; require_workers; echo still-waiting'
    done = subprocess.run(["bash", "-c", script], env={"PATH": f"{fake.parent}:/usr/bin:/bin", "NO_WORKER_CHECKS": "1"},
                          capture_output=True, text=True, timeout=30)
    if ok:
        assert done.returncode == 0 and done.stdout.strip() == "still-waiting", done.stderr
    else:
        assert done.returncode == 2 and done.stdout == "", done.stdout
        assert done.stderr.count("\n") == 1 and "no queue worker is running" in done.stderr, done.stderr
        assert "dvc queue start" in done.stderr


def test_a_worker_that_misses_one_status_call_is_not_taken_for_none(tmp_path):
    """A busy worker can miss `dvc queue status`'s ping: one answer of no worker, then one with a worker, goes on."""
    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    calls = tmp_path / "calls"
    none, one = STATUS.format(active=0, idle=0), STATUS.format(active=1, idle=0)
    fake.write_text(f"#!/bin/sh\necho x >> '{calls}'\nif [ $(wc -l < '{calls}') -eq 1 ]; then cat <<'END'\n{none}END\n"
                    f"else cat <<'END'\n{one}END\nfi\n")
    fake.chmod(0o755)
    script = f'. "{REPO_ROOT / "scripts" / "queue_common.sh"}"; require_workers; echo still-waiting'
    done = subprocess.run(["bash", "-c", script], env={"PATH": f"{fake.parent}:/usr/bin:/bin", "NO_WORKER_CHECKS": "2",
                                                "NO_WORKER_PAUSE": "0.1"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "still-waiting", done.stderr
    assert calls.read_text().count("x") == 2
