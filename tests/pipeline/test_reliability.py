"""Reliability of the pipeline: determinism, recovery from a killed run, and queued experiments.

(a) determinism: every stage script run a second time (session fixture `rerun_repo`) reproduces the outputs of the
    session's `dvc repro` (tiny_repo): metrics without timing keys, tensors/state_dicts (torch.equal), tables, plots.
(b) interruption: see test_kills.py.
(c) queue: two experiments queued with `dvc exp run --queue -S` and run by `dvc queue start -j 2`, each
    bit-identical (metrics and checkpoint) to a serial run of the same params with the same thread count.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path

import pytest


def _same_tensors(a, b, where: str, diffs: list[str], timing) -> None:
    """Recursive equality of loaded tensor files: tensors with torch.equal, timing keys ignored."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b)):
            diffs.append(where)
    elif isinstance(a, dict) and isinstance(b, dict):
        keys = (set(a) | set(b)) - set(timing)
        for k in sorted(keys, key=str):
            if k not in a or k not in b:
                diffs.append(f"{where}.{k} (only in one)")
            else:
                _same_tensors(a[k], b[k], f"{where}.{k}", diffs, timing)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_tensors(x, y, f"{where}[{i}]", diffs, timing)
    elif a != b:
        diffs.append(f"{where}: {a!r} != {b!r}")


def _csv_without_timing(path: Path, timing) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return [{k: v for k, v in row.items() if k not in timing} for row in rows]


def _differences(helpers, first: Path, second: Path, rels) -> list[str]:
    import torch

    diffs: list[str] = []
    for rel in sorted(rels):
        a, b = first / rel, second / rel
        name = Path(rel).name
        if name in helpers.TIMING_FILES:
            continue
        if name.endswith(".json"):
            if helpers.read_metrics(a) != helpers.read_metrics(b):
                diffs.append(rel)
        elif name.endswith(".csv"):
            if _csv_without_timing(a, helpers.TIMING_KEYS) != _csv_without_timing(b, helpers.TIMING_KEYS):
                diffs.append(rel)
        elif name.endswith(".pt"):
            sub: list[str] = []
            _same_tensors(torch.load(a, weights_only=True), torch.load(b, weights_only=True), rel, sub,
                          helpers.TIMING_KEYS)
            diffs.extend(sub)
        elif a.read_bytes() != b.read_bytes():
            diffs.append(rel)
    return diffs


def _rerun_files(helpers, tiny_repo: Path, rerun_repo) -> list[str]:
    """Output files of the dvc.yaml stages that ran fine in `rerun_repo` and exist in both repositories."""
    repo, results = rerun_repo
    rels = []
    for stage in helpers.dvc_stages(tiny_repo):
        if results.get(stage, {}).get("rc") != 0:
            continue
        rels.extend(rel for rel in results[stage]["after"] if (tiny_repo / rel).is_file())
    return rels


def test_rerun_reproduces_results(tiny_repo, rerun_repo, helpers):
    """Same params, same seeds, same thread count: the same numbers, tensors and figures (timing aside)."""
    repo, results = rerun_repo
    failed = [s for s in helpers.dvc_stages(tiny_repo) if results.get(s, {}).get("rc") != 0]
    rels = _rerun_files(helpers, tiny_repo, rerun_repo)
    assert any(rel.endswith(".pt") for rel in rels), "no tensor file to compare"
    diffs = _differences(helpers, tiny_repo, repo, rels)
    assert not diffs, f"a second run gave different results in: {diffs}"
    assert not failed, f"stage scripts that failed on the rerun (see test_smoke): {failed}"


def test_tensor_files_are_byte_identical(tiny_repo, rerun_repo, helpers):
    """DVC tracks outputs by MD5, so identical results should be identical files.

    Regression: io.save_tensors once called torch.save on the temporary file `.NAME.<random>.tmp`, and torch.save
    names the zip archive's top folder after the file it writes, so every .pt file embedded a random name and got a
    new MD5 on every run: `dvc repro --force <stage>` (or any rerun with unchanged results) then made DVC rerun
    every stage downstream. io.save_tensors now torch.saves into an io.BytesIO and writes its bytes (the archive is
    then always named "archive").
    """
    repo, _ = rerun_repo
    rels = [rel for rel in _rerun_files(helpers, tiny_repo, rerun_repo) if rel.endswith(".pt")]
    differ = [rel for rel in rels if helpers.sha256(tiny_repo / rel) != helpers.sha256(repo / rel)]
    assert not differ, f"same tensors, different bytes (so different DVC hashes): {differ}"


# ----------------------------------------------------------------------------------------------------------------
# (c) queued experiments


def _queue_states(helpers, repo: Path) -> dict[str, str]:
    out = helpers.dvc(repo, "queue", "status", check=True).stdout
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in ("Queued", "Running", "Success", "Failed"):
            states[parts[1]] = parts[-1]
    return states


def _finished_experiments(helpers, repo: Path) -> int:
    """Experiment refs (refs/exps/<xx>/<baseline>/<name>): a cheap git call, unlike `dvc queue status`."""
    refs = helpers.git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    return sum(1 for ref in refs if len(ref.split("/")) == 5 and ref.split("/")[2] not in ("celery", "stash"))


def _experiment_checkpoints(helpers, repo: Path) -> dict[float, str]:
    """{dropout: MD5 of models/baseline.pt} of every finished experiment, from the dvc.lock it committed."""
    import yaml

    refs = helpers.git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split()
    found = {}
    for ref in refs:
        if len(ref.split("/")) != 5 or ref.split("/")[2] in ("celery", "stash"):
            continue
        params = yaml.safe_load(helpers.git(repo, "show", f"{ref}:params.yaml").stdout)
        lock = yaml.safe_load(helpers.git(repo, "show", f"{ref}:dvc.lock").stdout)
        outs = {o["path"]: o["md5"] for o in lock["stages"]["train_baseline"]["outs"]}
        found[params["dropout"]] = outs["models/baseline.pt"]
    return found


def test_queued_experiments(repo_copy, helpers):
    """Two experiments through DVC's celery queue, two workers, each bit-identical to a serial run of its params.

    Only the train_baseline target runs (`dvc exp run --queue -S ... train_baseline`) to keep the cost small; each
    still runs in its own temporary copy of the committed repository, with the outputs of the unchanged stages
    checked out from the shared cache. Thread settings are explicit and the same for the queue's workers (they
    inherit the environment of `dvc queue start`) and the serial runs: the pipeline's count, so the only difference
    left is two experiments sharing the CPU, which must not change a single bit.
    """
    repo = repo_copy
    threads = helpers.pipeline_threads()
    assert helpers.git(repo, "status", "--porcelain").stdout == "", "the queue runs committed state only"
    values = (0.1, 0.3)
    for value in values:
        helpers.dvc(repo, "exp", "run", "--queue", "-S", f"dropout={value}", "train_baseline", check=True)
    t0 = time.perf_counter()
    helpers.start_queue(repo, 2, env=threads)
    states: dict[str, str] = {}
    try:
        deadline, next_status = time.monotonic() + 400, time.monotonic() + 20
        while True:
            if _finished_experiments(helpers, repo) >= len(values) or time.monotonic() > next_status:
                states = _queue_states(helpers, repo)
                next_status = time.monotonic() + 20
                if len(states) == len(values) and not {"Queued", "Running"} & set(states.values()):
                    break
            assert time.monotonic() < deadline, f"queue did not finish in time: {states}"
            time.sleep(1)
    finally:
        active = [name for name, state in _queue_states(helpers, repo).items() if state in ("Queued", "Running")]
        if active:
            helpers.dvc(repo, "queue", "kill", *active)
        helpers.stop_queue(repo)
    helpers.TIMINGS["queued experiments (2, -j 2)"] = time.perf_counter() - t0
    failed = [name for name, state in states.items() if state != "Success"]
    if failed:
        logs = "\n".join(helpers.dvc(repo, "queue", "logs", name).stdout[-2000:] for name in failed)
        pytest.fail(f"queued experiments failed: {states}\n{logs}")

    shown = json.loads(helpers.dvc(repo, "exp", "show", "--json", check=True).stdout)
    found = {}
    for row in shown:
        for exp in row.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                dropout = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("dropout")
                m = data.get("metrics", {}).get("metrics/train_baseline/metrics.json", {}).get("data")
                if rev.get("name") in states and m is not None:
                    found[dropout] = helpers.drop_timing(m)
    assert set(found) == set(values), f"experiments in `dvc exp show`: {found}"
    assert found[values[0]] != found[values[1]], f"both experiments gave the same metrics: {found}"
    # Queued runs leave the workspace alone.
    assert helpers.git(repo, "status", "--porcelain").stdout == ""
    queued_ckpt = _experiment_checkpoints(helpers, repo)
    assert set(queued_ckpt) == set(values), queued_ckpt

    # The same params run serially, one after the other, in the workspace.
    metrics, ckpt = repo / "metrics/train_baseline/metrics.json", repo / "models/baseline.pt"
    for value in values:
        helpers.set_param(repo, "dropout", value)
        rc, _, err = helpers.run_stage(repo, "train_baseline", env=threads)
        assert rc == 0, err[-3000:]
        assert helpers.read_metrics(metrics) == found[value], f"dropout={value}: queued and serial metrics differ"
        serial_md5 = hashlib.md5(ckpt.read_bytes()).hexdigest()
        assert serial_md5 == queued_ckpt[value], f"dropout={value}: queued and serial checkpoints differ"
