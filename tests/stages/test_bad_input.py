"""Issue catalogue: each broken input makes the stage exit with status 2 and exactly one stderr line
`error: ...` that names the problem, and leaves every output the stage declares untouched.

Each case breaks its own copy of the reproduced tiny repository (`repo_copy`).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path


def _run_broken(helpers, repo: Path, stage: str, *, env=None, guard=()):
    """Run `stage` and return (rc, stderr) after checking its outputs (plus `guard` paths) did not change."""
    watched = helpers.stage_outputs(repo, stage) + list(guard)
    before = helpers.snapshot(repo, watched)
    time.sleep(0.01)
    rc, _, err = helpers.run_stage(repo, stage, env=env)
    after = helpers.snapshot(repo, watched)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{stage} (exit {rc}) created or changed outputs {changed}; stderr:\n{err[-2000:]}"
    assert not helpers.temp_files(repo), f"temporary files left behind: {helpers.temp_files(repo)}"
    return rc, err


def _expect_error(helpers, repo: Path, stage: str, *needles: str, env=None, guard=()) -> str:
    rc, err = _run_broken(helpers, repo, stage, env=env, guard=guard)
    assert rc == 2, f"{stage} exited with {rc}, expected 2; stderr:\n{err[-3000:]}"
    return helpers.one_line_error(err, *needles)


# ----------------------------------------------------------------------------------------------------------------
# broken artifacts


def test_missing_upstream_artifact(repo_copy, helpers):
    (repo_copy / "data/prepared/train.pt").unlink()
    _expect_error(helpers, repo_copy, "train_baseline", "data/prepared/train.pt", "dvc repro download")


def test_corrupt_checkpoint(repo_copy, helpers):
    (repo_copy / "models/dae.pt").write_bytes(random.Random(0).randbytes(4096))
    _expect_error(helpers, repo_copy, "denoise", "models/dae.pt", "corrupt", "dvc repro train_dae",
                  guard=["models/dae.pt"])


def test_checkpoint_of_the_wrong_kind(repo_copy, helpers):
    shutil.copyfile(repo_copy / "models/tuned.pt", repo_copy / "models/dae.pt")
    _expect_error(helpers, repo_copy, "denoise", "models/dae.pt", "'cnn'", "'dae'", guard=["models/dae.pt"])


def test_noisy_and_clean_shapes_differ(repo_copy, helpers):
    import torch

    path = repo_copy / "data/noisy/test.pt"
    noisy = torch.load(path, weights_only=True)
    noisy["x_test"] = noisy["x_test"][:-10].clone()
    torch.save(noisy, path)
    _expect_error(helpers, repo_copy, "denoise", "data/noisy/test.pt", "shape", guard=["data/noisy/test.pt"])


# ----------------------------------------------------------------------------------------------------------------
# training that diverges


def test_diverged_training(repo_copy, helpers):
    """lr: 10 on the tiny run: the loss explodes but stays finite in the single epoch (regression: a check for
    non-finite losses alone accepted it, and the stage exited 0 with a useless checkpoint).

    Regression: train._fit's tqdm bar once wrote to stderr even when stderr was not a terminal, so captured stderr
    (dvc and CI logs, `dvc queue logs`) read '\\rcnn:   0%|...\\r    \\rerror: ...' instead of one 'error:' line."""
    helpers.set_param(repo_copy, "lr", 10)  # the largest lr params.yaml admits
    _expect_error(helpers, repo_copy, "train_baseline", "diverged", "lr")


def test_an_absurd_lr_is_refused_before_training(repo_copy, helpers):
    """lr: 1e30 would turn the loss NaN: the params schema refuses it, in one line naming the key and its range,
    before any training (a NaN loss from an lr in range still fails as "diverged": tests/unit/test_train.py)."""
    helpers.set_param(repo_copy, "lr", 1.0e30)
    _expect_error(helpers, repo_copy, "train_baseline", "'lr'", "less than or equal to 10")


# ----------------------------------------------------------------------------------------------------------------
# outputs that cannot be written


def test_output_directory_is_a_file(repo_copy, helpers):
    """data/denoised is a regular file, so denoise cannot create data/denoised/*.pt."""
    shutil.rmtree(repo_copy / "data/denoised")
    (repo_copy / "data/denoised").write_text("in the way\n")
    _expect_error(helpers, repo_copy, "denoise", "cannot write", "data/denoised", guard=["data/denoised"])


def test_metrics_directory_is_a_file(repo_copy, helpers):
    """metrics/train_baseline (a dvclive folder) is a regular file. Either the stage refuses (exit 2, one line) or
    it replaces the file with its folder; both are fine, leftovers are not. Regression: io.atomic_dir once moved
    the file to metrics/.train_baseline.old and removed it with shutil.rmtree(..., ignore_errors=True), which
    cannot remove a file, so `.train_baseline.old` stayed behind."""
    target = repo_copy / "metrics/train_baseline"
    shutil.rmtree(target)
    target.write_text("in the way\n")
    rc, _, err = helpers.run_stage(repo_copy, "train_baseline")
    if rc == 0:
        assert (target / "metrics.json").is_file()
    else:
        assert rc == 2, err[-3000:]
        helpers.one_line_error(err, "metrics/train_baseline")
    assert not helpers.temp_files(repo_copy), f"leftovers: {helpers.temp_files(repo_copy)}"


# ----------------------------------------------------------------------------------------------------------------
# no data


def test_download_without_any_mirror(repo_copy, helpers, tmp_path):
    """MNIST_MIRROR is an empty folder and the public mirrors are unreachable: the message lists what was tried.

    The test cuts the network itself: helpers.offline_env sends every http(s) request to a closed local port
    (tests/test_no_skips.py checks that urllib honours it), so each public mirror fails with "refused".
    """
    from mnistpipe.data import SOURCES

    PUBLIC_MIRRORS = SOURCES["mnist"].mirrors

    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    t0 = time.perf_counter()
    line = _expect_error(helpers, repo_copy, "download", str(empty), *PUBLIC_MIRRORS, "MNIST_MIRROR",
                         env={"MNIST_MIRROR": str(empty), "MNIST_MIRROR_ONLY": "", **helpers.offline_env()})
    helpers.TIMINGS["download with no reachable mirror (whole stage)"] = time.perf_counter() - t0
    assert "could not get" in line
    for url in PUBLIC_MIRRORS:
        why = line.split(url, 1)[1].split("; ")[0]
        assert "refused" in why.lower(), f"{url} did not go to the closed proxy port ({why!r}): {line}"


# ----------------------------------------------------------------------------------------------------------------
# bad params


def test_unknown_key_inside_a_section(repo_copy, helpers):
    helpers.set_param(repo_copy, "recipe.droput", 0.1)
    _expect_error(helpers, repo_copy, "train_baseline", "unknown key", "recipe.droput", "params.yaml")


def test_missing_section(repo_copy, helpers):
    helpers.edit_params(repo_copy, lambda p: p.pop("denoise"))
    _expect_error(helpers, repo_copy, "denoise", "missing key", "'denoise'", "params.yaml")


def test_traceback_switch_shows_the_traceback(repo_copy, helpers):
    helpers.set_param(repo_copy, "recipe.droput", 0.1)
    rc, err = _run_broken(helpers, repo_copy, "train_baseline", env={"MNISTPIPE_TRACEBACK": "1"})
    assert rc == 2, err[-3000:]
    assert "Traceback (most recent call last)" in err and "PipelineError" in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "recipe.droput" in last, last
