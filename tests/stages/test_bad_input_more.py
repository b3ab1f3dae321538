"""Bad input through every stage script that reads artifacts: for each of add_awgn, tune_cnn, select_cnn,
train_on_noisy, train_dae, denoise, train_on_denoised, evaluate, visualize and robustness, a missing input, a
corrupt one and one of the wrong kind or shape. Each must give exit status 2, exactly one `error: ...` line naming
the file and the stage to rerun, and leave every output the stage declares (and the broken input itself) as it was.

A stage run costs a few seconds of imports, so the cases of one stage share one copy of the reproduced tiny
repository: a case breaks one input, runs the stage, checks, and puts the input back from its saved bytes.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


def _load(path: Path):
    import torch

    return torch.load(path, weights_only=True)


def _save(path: Path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())


# ----------------------------------------------------------------------------------------------------------------
# ways to break a file: each takes (repo, path of the file to break)


def missing(repo: Path, path: Path) -> None:
    path.unlink()


def truncated(repo: Path, path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(repo: Path, path: Path) -> None:
    path.write_bytes(random.Random(path.name).randbytes(3000))


def copied_from(rel: str) -> Callable[[Path, Path], None]:
    def brk(repo: Path, path: Path) -> None:
        shutil.copyfile(repo / rel, path)
    return brk


def tensors(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    """Load the tensor file, let `edit` change the dict in place, save it back (a valid file of the wrong shape)."""
    def brk(repo: Path, path: Path) -> None:
        obj = _load(path)
        edit(obj)
        _save(path, obj)
    return brk


def json_edit(edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def brk(repo: Path, path: Path) -> None:
        obj = json.loads(path.read_text())
        edit(obj)
        path.write_text(json.dumps(obj, indent=2))
    return brk


def _pad_to_32(t: dict, key: str) -> None:
    """Images of 32x32 pixels instead of 28x28 (another dataset's size)."""
    import torch

    t[key] = torch.nn.functional.pad(t[key], (2, 2, 2, 2))


def _drop_rows(t: dict, key: str, n: int = 10) -> None:
    t[key] = t[key][:-n].clone()


def _hp(key: str, value):
    def edit(cfg: dict) -> None:
        cfg["hyperparameters"][key] = value
    return edit


def _dae_of_other_width(ckpt: dict) -> None:
    """A dae checkpoint whose config does not match its weights (width doubled after training)."""
    ckpt["config"] = {**ckpt["config"], "width": 2 * ckpt["config"]["width"]}


def _stds(value):
    """params.yaml with another `robustness.stds` (the noise levels of the robustness curve)."""
    def brk(repo: Path, path: Path) -> None:
        import yaml

        params = yaml.safe_load(path.read_text())
        params["robustness"]["stds"] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False))
    return brk


def _without(*keys: str):
    def edit(obj: dict) -> None:
        for key in keys:
            del obj[key]
    return edit


# ----------------------------------------------------------------------------------------------------------------
# the catalogue


@dataclass(frozen=True)
class Case:
    stage: str
    name: str
    target: str                                 # the input to break, relative to the repository
    brk: Callable[[Path, Path], None]
    needles: tuple[str, ...]                    # what the one error line must name

    @property
    def id(self) -> str:
        return f"{self.stage}-{self.name}"


PREP_TRAIN, PREP_TEST = "data/prepared/train.pt", "data/prepared/test.pt"
NOISY_TRAIN, NOISY_TEST = "data/noisy/train.pt", "data/noisy/test.pt"
DENOISED_TRAIN, DENOISED_TEST = "data/denoised/train.pt", "data/denoised/test.pt"
CONFIG = "models/tuned_config.json"
SEARCH = "models/search_best.json"
REPRO = "dvc repro {}".format

CASES = [
    # add_awgn: the prepared train/val and test files
    Case("add_awgn", "missing", PREP_TEST, missing, (PREP_TEST, REPRO("download"))),
    Case("add_awgn", "corrupt", PREP_TRAIN, truncated, (PREP_TRAIN, "corrupt", REPRO("download"))),
    Case("add_awgn", "images_32x32", PREP_TEST, tensors(lambda t: _pad_to_32(t, "x_test")),
         (PREP_TEST, "x_test", "28", REPRO("download"))),
    # tune_cnn: the prepared train/val file
    Case("tune_cnn", "missing", PREP_TRAIN, missing, (PREP_TRAIN, REPRO("download"))),
    Case("tune_cnn", "corrupt", PREP_TRAIN, garbage, (PREP_TRAIN, "corrupt", REPRO("download"))),
    Case("tune_cnn", "no_val_labels", PREP_TRAIN, tensors(_without("y_val")), (PREP_TRAIN, "y_val", REPRO("download"))),
    # select_cnn: the search's best configuration and checkpoint, the baseline's checkpoint
    Case("select_cnn", "missing", SEARCH, missing, (SEARCH, REPRO("tune_cnn"))),
    Case("select_cnn", "corrupt", "models/baseline.pt", truncated,
         ("models/baseline.pt", "corrupt", REPRO("train_baseline"))),
    Case("select_cnn", "kernel_size_text", SEARCH, json_edit(_hp("kernel_size", "seven")),
         (SEARCH, "kernel_size", REPRO("tune_cnn"))),
    # train_on_noisy: the tuned CNN and its configuration, the noisy images, the clean labels
    Case("train_on_noisy", "missing", CONFIG, missing, (CONFIG, REPRO("select_cnn"))),
    Case("train_on_noisy", "corrupt", CONFIG, truncated, (CONFIG, "JSON", REPRO("select_cnn"))),
    Case("train_on_noisy", "kernel_size_text", CONFIG, json_edit(_hp("kernel_size", "seven")),
         (CONFIG, "kernel_size", REPRO("select_cnn"))),
    Case("train_on_noisy", "dae_as_cnn", "models/tuned.pt", copied_from("models/dae.pt"),
         ("models/tuned.pt", "'dae'", REPRO("select_cnn"))),
    # train_dae: noisy and clean training images
    Case("train_dae", "missing", NOISY_TRAIN, missing, (NOISY_TRAIN, REPRO("add_awgn"))),
    Case("train_dae", "corrupt", NOISY_TRAIN, truncated, (NOISY_TRAIN, "corrupt", REPRO("add_awgn"))),
    Case("train_dae", "test_file_instead", NOISY_TRAIN, copied_from(NOISY_TEST),
         (NOISY_TRAIN, "x_train", REPRO("add_awgn"))),
    Case("train_dae", "fewer_noisy_images", NOISY_TRAIN, tensors(lambda t: _drop_rows(t, "x_train")),
         (NOISY_TRAIN, REPRO("add_awgn"))),
    # denoise: the autoencoder and the noisy images
    Case("denoise", "missing", "models/dae.pt", missing, ("models/dae.pt", REPRO("train_dae"))),
    Case("denoise", "corrupt", NOISY_TRAIN, truncated, (NOISY_TRAIN, "corrupt", REPRO("add_awgn"))),
    Case("denoise", "weights_do_not_fit_config", "models/dae.pt", tensors(_dae_of_other_width),
         ("models/dae.pt", "do not match")),
    # train_on_denoised: the denoised images and the tuned CNN's configuration
    Case("train_on_denoised", "missing", DENOISED_TRAIN, missing, (DENOISED_TRAIN, REPRO("denoise"))),
    Case("train_on_denoised", "corrupt", DENOISED_TRAIN, garbage, (DENOISED_TRAIN, "corrupt", REPRO("denoise"))),
    Case("train_on_denoised", "dropout_out_of_range", CONFIG, json_edit(_hp("dropout", 1.5)),
         (CONFIG, "dropout", REPRO("select_cnn"))),
    # evaluate: four checkpoints and three test sets
    Case("evaluate", "missing", "models/noisy.pt", missing, ("models/noisy.pt", REPRO("train_on_noisy"))),
    Case("evaluate", "corrupt", "models/baseline.pt", truncated,
         ("models/baseline.pt", "corrupt", REPRO("train_baseline"))),
    Case("evaluate", "images_32x32", DENOISED_TEST, tensors(lambda t: _pad_to_32(t, "x_test")),
         (DENOISED_TEST, "x_test", "28", REPRO("denoise"))),
    # visualize: evaluate's results, the tuned CNN, the test sets
    Case("visualize", "missing", "metrics/evaluate.json", missing, ("metrics/evaluate.json", REPRO("evaluate"))),
    Case("visualize", "corrupt", "metrics/evaluate/misclassified.json", garbage,
         ("metrics/evaluate/misclassified.json", "JSON", REPRO("evaluate"))),
    Case("visualize", "dae_as_cnn", "models/tuned.pt", copied_from("models/dae.pt"),
         ("models/tuned.pt", "'dae'", REPRO("select_cnn"))),
    Case("visualize", "result_missing", "metrics/evaluate.json", json_edit(_without("tuned")),
         ("metrics/evaluate.json", "tuned", REPRO("evaluate"))),
    Case("visualize", "confusion_9x10", "metrics/evaluate/confusion.json", json_edit(lambda o: o["tuned"].pop()),
         ("metrics/evaluate/confusion.json", "'tuned'", "10x10", REPRO("evaluate"))),
    # robustness: four checkpoints and its own std list
    Case("robustness", "missing", "models/denoised.pt", missing, ("models/denoised.pt", REPRO("train_on_denoised"))),
    Case("robustness", "corrupt", "models/dae.pt", truncated, ("models/dae.pt", "corrupt", REPRO("train_dae"))),
    Case("robustness", "dae_as_cnn", "models/noisy.pt", copied_from("models/dae.pt"),
         ("models/noisy.pt", "'dae'", REPRO("train_on_noisy"))),
    Case("robustness", "no_stds", "params.yaml", _stds([]), ("robustness.stds", "at least 1")),
    Case("robustness", "negative_std", "params.yaml", _stds([0.0, -0.2]), ("robustness.stds", "-0.2")),
]
STAGES = tuple(dict.fromkeys(c.stage for c in CASES))


def run_case(helpers, repo: Path, case: Case) -> str:
    """Break `case.target` in `repo`, run the stage, check the failure, restore the input; return the error line."""
    target = repo / case.target
    saved = target.read_bytes()
    try:
        case.brk(repo, target)
        watched = helpers.stage_outputs(repo, case.stage) + [case.target]
        before = helpers.snapshot(repo, watched)
        time.sleep(0.01)  # a rewritten file must get another mtime even on a coarse clock
        rc, _, err = helpers.run_stage(repo, case.stage)
        after = helpers.snapshot(repo, watched)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"{case.id} (exit {rc}) created or changed {changed}; stderr:\n{err[-3000:]}"
        assert rc == 2, f"{case.id}: exit {rc}, expected 2; stderr:\n{err[-3000:]}"
        line = helpers.one_line_error(err, *case.needles)
        assert not helpers.temp_files(repo), f"{case.id}: temporaries left behind: {helpers.temp_files(repo)}"
        return line
    finally:
        target.write_bytes(saved)


@pytest.fixture(scope="module")
def stage_repos(tiny_repo, tmp_path_factory):
    """One copy of the reproduced tiny repository per stage, made when its first case runs."""
    repos: dict[str, Path] = {}

    def get(stage: str) -> Path:
        if stage not in repos:
            repos[stage] = shutil.copytree(tiny_repo, tmp_path_factory.mktemp(f"bad_{stage}") / "repo",
                                           symlinks=True)
        return repos[stage]

    yield get
    for repo in repos.values():
        shutil.rmtree(repo, ignore_errors=True)


def test_every_stage_has_the_three_kinds_of_case():
    kinds = {stage: {c.name for c in CASES if c.stage == stage} for stage in STAGES}
    assert set(STAGES) == {"add_awgn", "tune_cnn", "select_cnn", "train_on_noisy", "train_dae", "denoise",
                           "train_on_denoised", "evaluate", "visualize", "robustness"}
    for stage, names in kinds.items():
        assert {"missing", "corrupt"} <= names and len(names) >= 3, f"{stage}: {sorted(names)}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, stage_repos, helpers):
    t0 = time.perf_counter()
    run_case(helpers, stage_repos(case.stage), case)
    key = "bad input through every stage (all cases)"
    helpers.TIMINGS[key] = helpers.TIMINGS.get(key, 0.0) + time.perf_counter() - t0
