"""The repository's default DVC remote: push a reproduced tiny pipeline, pull it into a fresh clone, nothing to rerun.

The committed remote is a folder beside the repository (`../mnistpipe-dvc-remote`, relative to the checkout), so
the copy under test pushes into a folder beside itself, inside the test's temporary directory, and a clone made
next to it finds the same folder: exactly what README's `dvc push` / `dvc pull` lines do on one machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def _default_remote(helpers, repo: Path) -> Path:
    """The default remote's folder as DVC resolves it (`dvc remote list` wraps long paths, so not from there)."""
    name = helpers.dvc(repo, "remote", "default", check=True).stdout.strip()
    assert name, "the repository has no default DVC remote"
    return Path(helpers.dvc(repo, "config", f"remote.{name}.url", check=True).stdout.strip())


def test_push_then_pull_into_a_fresh_clone(repo_copy, helpers, tmp_path):
    t0 = time.perf_counter()
    repo = repo_copy
    remote = _default_remote(helpers, repo)
    assert remote == (repo.parent / "mnistpipe-dvc-remote").resolve(), remote
    assert tmp_path in remote.parents, f"the test would push outside its temporary folder: {remote}"

    push = helpers.dvc(repo, "push", check=True)
    assert any(remote.rglob("*")) and "pushed" in push.stdout, push.stdout[-2000:]

    fresh = tmp_path / "fresh"
    helpers.git(tmp_path, "clone", "-q", str(repo), str(fresh))
    assert _default_remote(helpers, fresh) == remote
    outs = [o for stage in helpers.dvc_stages(fresh) for o in helpers.stage_outputs(fresh, stage)]
    cached = [o for o in outs if not (fresh / o).exists()]
    assert "models/tuned.pt" in cached, "a clone should lack the DVC-cached outputs before `dvc pull`"

    helpers.dvc(fresh, "pull", check=True)
    missing = [o for o in outs if not (fresh / o).exists()]
    assert not missing, f"outputs missing after `dvc pull`: {missing}"
    assert helpers.snapshot(fresh, cached).keys() == helpers.snapshot(repo, cached).keys()
    for rel, (_, digest) in helpers.snapshot(fresh, cached).items():
        assert digest == helpers.sha256(repo / rel), f"{rel} differs from the pushed file"

    status = json.loads(helpers.dvc(fresh, "status", "--json", check=True).stdout or "{}")
    assert status == {}, f"`dvc status` after pull: {status}"
    repro = helpers.dvc(fresh, "repro", check=True)
    assert "Running stage" not in repro.stdout, repro.stdout[-3000:]
    assert helpers.git(fresh, "status", "--porcelain").stdout == ""
    helpers.TIMINGS["remote: push, clone, pull, repro"] = time.perf_counter() - t0
