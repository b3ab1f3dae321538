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
    done = subprocess.run(["bash", "-c", script], env={"PATH": f"{fake.parent}:/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=30)
    if ok:
        assert done.returncode == 0 and done.stdout.strip() == "still-waiting", done.stderr
    else:
        assert done.returncode == 2 and done.stdout == "", done.stdout
        assert done.stderr.count("\n") == 1 and "no queue worker is running" in done.stderr, done.stderr
        assert "dvc queue start" in done.stderr
