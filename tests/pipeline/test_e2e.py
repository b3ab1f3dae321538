"""End to end: the tiny pipeline reproduced with `dvc repro` (the session's `tiny_repo`), looked up from dvc.yaml.

Whatever stages dvc.yaml has, each declared output must exist and each metrics file must hold sane numbers;
a second `dvc repro` must do nothing; a typo in params.yaml must stop `dvc repro` with a one-line error; and
`dvc exp run -S ...` plus `dvc metrics diff` must work as the report's instructions say.
"""

from __future__ import annotations

import json
import re

import pytest

# n-MNIST's AWGN level and the PSNR it gives on MNIST test images (after 8-bit storage); see add_awgn.
NMNIST_STD, NMNIST_PSNR_DB = 0.335, 12.4


def test_every_declared_output_exists(tiny_repo, helpers):
    missing = []
    for stage in helpers.dvc_stages(tiny_repo):
        for rel in helpers.stage_outputs(tiny_repo, stage):
            p = tiny_repo / rel
            if not (p.is_file() and p.stat().st_size > 0 or p.is_dir() and any(p.iterdir())):
                missing.append(f"{stage}: {rel}")
    assert not missing, "declared outputs missing or empty after dvc repro:\n" + "\n".join(missing)


def test_top_level_plots_exist(tiny_repo, helpers):
    """Every file named in dvc.yaml's top-level `plots` (images, and the y files of the per-epoch plots)."""
    import yaml

    plots = yaml.safe_load((tiny_repo / "dvc.yaml").read_text()).get("plots") or []
    files = []
    for entry in plots:
        if isinstance(entry, str):
            files.append(entry)
            continue
        for name, spec in entry.items():
            y = (spec or {}).get("y")
            files.extend(y.keys() if isinstance(y, dict) else [name])
    missing = [f for f in files if not (tiny_repo / f).is_file()]
    assert not missing, f"plot files named in dvc.yaml but not produced: {missing}"


def test_metrics_are_sane(tiny_repo, helpers):
    params = helpers.read_params(tiny_repo)
    metrics = helpers.all_metrics(tiny_repo)
    assert metrics, "dvc.yaml declares no metrics"
    loaded = {}
    for rel in metrics:
        data = json.loads((tiny_repo / rel).read_text())
        assert isinstance(data, dict) and data, f"{rel} is not a non-empty JSON object"
        loaded[rel] = data
        for key, value in helpers.numbers(data):
            assert helpers.finite(value), f"{rel}: {key} = {value} is not finite"
            leaf = key.rsplit(".", 1)[-1]
            if leaf.endswith("acc"):
                assert 0 < value <= 1, f"{rel}: {key} = {value} is not an accuracy in (0, 1]"
            if "psnr" in leaf:
                assert 0 < value < 100, f"{rel}: {key} = {value} dB is not a plausible PSNR"
            if "ssim" in leaf:
                assert -1 <= value <= 1, f"{rel}: {key} = {value} is not an SSIM"
    for rel, data in loaded.items():
        if "epochs" in data:  # a training stage: it ran the configured number of epochs
            assert data["epochs"] >= 1 and data.get("epoch", data["epochs"]) == data["epochs"], rel

    # Stage-specific checks, for the stages that are present.
    download = loaded.get("metrics/download.json")
    if download is not None:
        dl = params["download"]
        assert download["n_val"] == dl["val_size"]
        assert download["n_train"] == dl["train_limit"] - dl["val_size"]
        assert download["n_test"] == dl["test_limit"]
        assert sum(download["train_label_counts"]) == download["n_train"]
    if params.get("add_awgn", {}).get("std") == NMNIST_STD:
        for rel, key in (("metrics/add_awgn.json", "test_psnr_db"), ("metrics/denoise.json", "test_psnr_noisy_db")):
            if rel in loaded:
                assert loaded[rel][key] == pytest.approx(NMNIST_PSNR_DB, abs=1.0), f"{rel}: {key}"
    baseline = loaded.get("metrics/train_baseline/metrics.json")
    if baseline is not None:
        assert baseline["epochs"] == params["epochs"]


def test_second_repro_reruns_nothing(tiny_repo, helpers):
    proc = helpers.dvc(tiny_repo, "repro")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    stages = list(helpers.dvc_stages(tiny_repo))
    up_to_date = "Data and pipelines are up to date" in out
    skipped = all(f"Stage '{s}' didn't change" in out for s in stages)
    assert up_to_date or skipped, f"a second dvc repro did work:\n{out[-3000:]}"
    assert "Running stage" not in out and "checking out" not in out, out[-3000:]
    # ... and left the working tree exactly as committed (no rewritten lock file, metrics or .gitignore).
    assert helpers.git(tiny_repo, "status", "--porcelain").stdout == ""


# A stray key beside an intact one, so nothing but the whole-file check can catch it: train_baseline declares
# `dropout` and train_dae its whole section, and both would run fine with the typo ignored.
TYPOS = {
    "top_level": (("droput",), 0, "droput"),
    "in_section": (("train_dae", "widht"), 4, "train_dae.widht"),
}


@pytest.mark.parametrize("case", sorted(TYPOS))
def test_param_typo_stops_repro_with_one_line(repo_copy, helpers, case):
    keys, value, named = TYPOS[case]

    def add_stray_key(params: dict) -> None:
        node = params
        for key in keys[:-1]:
            node = node[key]
        assert keys[-1] not in node and (case != "in_section" or "width" in node)
        node[keys[-1]] = value

    outputs = ["dvc.lock", *(rel for stage in helpers.dvc_stages(repo_copy)
                             for rel in helpers.stage_outputs(repo_copy, stage))]
    before = helpers.snapshot(repo_copy, outputs)
    helpers.edit_params(repo_copy, add_stray_key)
    assert "dropout" in helpers.read_params(repo_copy)
    proc = helpers.dvc(repo_copy, "repro")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    # dvc adds its own "ERROR: failed to reproduce ..." line; the stage's message is one line that names the key.
    ours = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(ours) == 1, f"expected one 'error:' line from the stage:\n{out[-3000:]}"
    assert f"unknown key '{named}'" in ours[0], ours[0]
    assert "Traceback" not in out, out[-3000:]
    ran = re.findall(r"Running stage '([^']+)'", out)
    assert ran == ["validate_params"], f"stages that ran: {ran}\n{out[-3000:]}"
    assert helpers.snapshot(repo_copy, outputs) == before, "a failed repro changed outputs or dvc.lock"
    assert helpers.git(repo_copy, "status", "--porcelain").stdout.split() == ["M", "params.yaml"]


def test_exp_run_set_param_and_metrics_diff(repo_copy, helpers):
    """`dvc exp run -S dropout=0` reruns what the baseline's six can change: the baseline and the choice of the
    tuned CNN, and after them only what the models they wrote feed; the search stays cached, and so does all that
    hangs on the tuned CNN while the choice (and so models/tuned.pt, byte for byte) stays the same."""
    tuned_before = (repo_copy / "models/tuned.pt").read_bytes()
    proc = helpers.dvc(repo_copy, "exp", "run", "-S", "dropout=0")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ran = re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr)
    assert {"train_baseline", "select_cnn", "evaluate"} <= set(ran), ran
    assert not {"download", "add_awgn", "tune_cnn", "train_dae", "denoise"} & set(ran), ran
    if (repo_copy / "models/tuned.pt").read_bytes() == tuned_before:
        assert not {"train_on_noisy", "train_on_denoised", "robustness"} & set(ran), ran
    assert helpers.read_params(repo_copy)["dropout"] == 0
    diff = helpers.dvc(repo_copy, "metrics", "diff", "--json", check=True)
    changes = json.loads(diff.stdout or "{}")
    baseline = changes.get("metrics/train_baseline/metrics.json", {})
    changed = {k: v for k, v in baseline.items() if k not in helpers.TIMING_KEYS and v.get("diff")}
    assert changed, f"dvc metrics diff shows no change for metrics/train_baseline/metrics.json: {changes}"
    # Stages that depend neither on dropout nor on the baseline model did not rerun.
    for rel in ("metrics/download.json", "metrics/add_awgn.json", "metrics/train_dae/metrics.json",
                "metrics/denoise.json"):
        assert rel not in changes, (rel, changes[rel])


def test_tensor_files_hold_only_their_data(tiny_repo, helpers):
    """A tensor file is about as large as its tensors: a sliced view must not drag its whole storage along.

    Regression: stages/download.py once kept `x_test[:test_limit]` (a view), and torch.save writes a view's whole
    storage, so with test_limit 200 data/prepared/test.pt held all 10,000 test images (~7.9 MB, not ~0.2 MB).
    The stage now `.clone()`s the sliced tensors.
    """
    import torch

    bloated = []
    for stage in helpers.dvc_stages(tiny_repo):
        for rel in helpers.stage_outputs(tiny_repo, stage):
            if not rel.endswith(".pt") or not rel.startswith("data/"):
                continue
            path = tiny_repo / rel
            tensors = torch.load(path, weights_only=True)
            payload = sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))
            if path.stat().st_size > 2 * payload + 65536:
                bloated.append(f"{rel}: {path.stat().st_size} bytes for {payload} bytes of tensors")
    assert not bloated, "tensor files larger than their tensors:\n" + "\n".join(bloated)
