"""Reliability of the pipeline: determinism, recovery from a killed run, and queued experiments.

(a) determinism: every stage script run a second time (session fixture `rerun_repo`) reproduces the outputs of the
    session's `dvc repro` (tiny_repo): metrics without timing keys, tensors/state_dicts (torch.equal), tables, plots.
(b) interruption: see test_kills.py.
(c) queued experiments, bit-identical to a serial run of the same params: see test_seed_grid_queue.py.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path


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
