"""Every stage script, run directly (`python stages/<stage>.py`) in a copy of the reproduced tiny repository, exits 0
and rewrites all the outputs dvc.yaml declares for it.

The stages come from dvc.yaml, in order. The runs themselves happen once, in the session fixture `rerun_repo`,
which the determinism test reuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def _stages() -> list[str]:
    """dvc.yaml's stages, read at collection time."""
    return list(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("stage", _stages())
def test_stage_script_runs_and_rewrites_outputs(stage, rerun_repo, helpers):
    repo, results = rerun_repo
    res = results[stage]
    assert res["rc"] == 0, f"stages/{stage}.py exited with {res['rc']}:\n{res['stderr'][-4000:]}"
    outs = helpers.stage_outputs(repo, stage)
    missing = [rel for rel in outs if not (repo / rel).exists()]
    assert not missing, f"{stage} did not write {missing}"
    before, after = res["before"], res["after"]
    if outs:
        assert after, f"{stage}: its declared outputs hold no files"
        stale = sorted(rel for rel, (mtime, _) in before.items() if rel in after and after[rel][0] == mtime)
        assert not stale, f"{stage} did not rewrite {stale}"
        vanished = sorted(set(before) - set(after))
        assert not vanished, f"{stage} removed {vanished}"
    assert not helpers.temp_files(repo), f"temporary files left behind: {helpers.temp_files(repo)}"


def test_train_dae_four_steps(repo_copy, helpers):
    """train_size 300, batch_size 64, 1 epoch = exactly 4 optimizer steps.

    Regression: OneCycleLR(total_steps=4, pct_start=0.25) ends its warm-up on step 0 and divides by zero; the stage
    died with a ZeroDivisionError traceback (exit 1).
    """
    helpers.set_param(repo_copy, "train_dae.train_size", 300)
    helpers.set_param(repo_copy, "train_dae.batch_size", 64)
    helpers.set_param(repo_copy, "train_dae.epochs", 1)
    rc, _, err = helpers.run_stage(repo_copy, "train_dae")
    assert rc == 0, f"train_dae with 4 optimizer steps exited with {rc}:\n{err[-3000:]}"


def test_device_auto(repo_copy, helpers):
    """`device: auto` (the default in params.yaml) must work for the stages that run a model after training.

    Regression: stages/train_dae.py and stages/denoise.py pass the device ("auto") to train.predict, which called
    torch.device("auto") -> RuntimeError traceback, exit 1. (The tiny params pin device: cpu.) The one top-level
    key reaches every stage that runs a model: dvc sees exactly those (and validate_params, which depends on the
    whole file) as changed.
    """
    helpers.set_param(repo_copy, "device", "auto")
    status = json.loads(helpers.dvc(repo_copy, "status", "--json", check=True).stdout)
    moved = {stage for stage, changes in status.items() if '"device"' in json.dumps(changes)} - {"validate_params"}
    assert moved == {"train_baseline", "tune_cnn", "select_cnn", "train_on_noisy", "train_dae", "denoise",
                     "train_on_denoised", "evaluate", "robustness"}, status
    failures = []
    for stage in ("train_dae", "denoise"):
        rc, _, err = helpers.run_stage(repo_copy, stage)
        if rc != 0:
            failures.append(f"{stage} exited with {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    assert not failures, "\n".join(failures)


def test_checkpoints_record_stage_and_dataset(tiny_repo, helpers):
    """Each checkpoint names the stage that wrote it and the dataset it learnt (predict refuses non-digit models)."""
    import torch

    writers = {"baseline": "train_baseline", "search_best": "tune_cnn", "tuned": "select_cnn",
               "noisy": "train_on_noisy", "dae": "train_dae", "denoised": "train_on_denoised"}
    dataset = helpers.read_params(tiny_repo)["dataset"]
    for name, stage in writers.items():
        ckpt = torch.load(tiny_repo / "models" / f"{name}.pt", map_location="cpu", weights_only=True)
        assert ckpt["meta"]["dataset"] == dataset, f"models/{name}.pt: {ckpt['meta']}"
        recorded = ckpt.get("stage", ckpt["meta"].get("stage"))
        assert recorded == stage, f"models/{name}.pt was recorded as written by {recorded!r}, not {stage!r}"
