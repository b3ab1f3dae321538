"""mnistpipe.tune and mnistpipe.tune_worker on tiny real data: the in-memory search, SQLite studies, workers."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from mnistpipe import io, tensors, tune, tune_worker
from mnistpipe.errors import PipelineError
from mnistpipe.params import validate

N_TRIALS = 4
SPACE = {"kernel_size": {"choices": [3, 5]}, "stride": {"choices": [1, 2]}, "dropout": {"low": 0.0, "high": 0.5},
         "lr": {"low": 0.0005, "high": 0.01, "log": True}, "epochs": {"low": 1, "high": 1},
         "batch_size": {"choices": [32, 64]}}
RECIPE = dict(channels=[4, 8], convs_per_block=1, hidden=16, batchnorm=True, weight_decay=5e-4, label_smoothing=0.1,
              max_shift=1)


@pytest.fixture(scope="module")
def split(t10k):
    """400 training and 100 validation images of the real MNIST test file, as uint8 (what download writes)."""
    x, y = t10k
    return {"x_train": x[:400].clone(), "y_train": y[:400].clone(), "x_val": x[400:500].clone(),
            "y_val": y[400:500].clone()}


def search(split, **kw):
    d = {k: tensors.to_float(v) if k.startswith("x_") else v for k, v in split.items()}
    return tune.tune_cnn(d["x_train"], d["y_train"], d["x_val"], d["y_val"], space=SPACE, recipe=RECIPE,
                         n_trials=N_TRIALS, seed=0, trial_train_size=300, device="cpu", **kw)


def outcome(study: optuna.Study) -> list:
    return [(t.state, t.params, t.value) for t in study.trials]


@pytest.fixture(scope="module")
def in_memory(split):
    return search(split)


def test_in_memory_search_is_deterministic(split, in_memory):
    again = search(split)
    assert outcome(again.study) == outcome(in_memory.study)
    assert len(in_memory.study.trials) == N_TRIALS
    assert len({tuple(sorted(t.params.items())) for t in in_memory.study.trials}) == N_TRIALS
    assert in_memory.best_value == max(t.value for t in in_memory.study.trials if t.value is not None)
    # The table the stage commits has no worker column: the default search writes what it always wrote.
    assert not any(c.startswith("user_attrs_worker") for c in in_memory.trials.columns)


def test_one_process_on_sqlite_matches_the_in_memory_search_and_resumes(split, in_memory, tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    found = search(split, storage=url)
    assert outcome(found.study) == outcome(in_memory.study)
    assert found.best_params == in_memory.best_params
    assert {t.user_attrs["worker"] for t in found.study.trials} == {tune.worker_name()}
    # Run again (as `dvc repro` would after a crash): the full study is reused, nothing is added.
    again = search(split, storage=url)
    assert len(again.study.trials) == N_TRIALS and again.best_params == found.best_params


def test_a_study_of_another_search_is_refused(split, tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    spec = {"space": SPACE, "recipe": RECIPE, "seed": 0, "trial_train_size": 300, "pruner_warmup_epochs": 1,
            "meta": {}, "n_trials": 2, "device": "cpu"}
    tune.open_shared_study(url, "s", spec=spec)
    tune.open_shared_study(url, "s", spec={**spec, "n_trials": 5, "device": "auto"})  # more trials: allowed
    other = copy.deepcopy(spec)
    other["space"]["dropout"]["high"] = 0.3
    with pytest.raises(PipelineError, match="different space.*study_name"):
        tune.open_shared_study(url, "s", spec={**other, "meta": {"data_sha256": "x"}})


def test_two_worker_processes_share_an_sqlite_study(split, tmp_path):
    path = tmp_path / "train.pt"
    io.save_tensors(path, split)
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    found = search(split, storage=url, n_workers=2,
                   meta={"data": str(path), "data_sha256": tune_worker.data_fingerprint(path)})
    trials = found.study.trials
    assert len(trials) == N_TRIALS and all(t.state.is_finished() for t in trials)
    workers = [t.user_attrs["worker"] for t in trials]
    assert len(set(workers)) == 2 and tune.worker_name() not in workers
    assert all(workers.count(w) == N_TRIALS // 2 for w in set(workers)), workers  # an even share each
    assert found.best_value == optuna.load_study(study_name="tune_cnn", storage=url).best_value


def test_worker_refuses_a_missing_study_and_other_data(split, tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    with pytest.raises(PipelineError, match="no study 'nope'.*dvc repro tune_cnn"):
        tune_worker.main(["--storage", url, "--study", "nope"])
    path = tmp_path / "train.pt"
    io.save_tensors(path, split)
    spec = {"space": SPACE, "recipe": RECIPE, "seed": 0, "trial_train_size": 300, "pruner_warmup_epochs": 1,
            "meta": {"data": str(path), "data_sha256": "0" * 64}, "n_trials": 2, "device": "cpu"}
    tune.open_shared_study(url, "s", spec=spec)
    with pytest.raises(PipelineError, match="not the training data of study 's'"):
        tune_worker.main(["--storage", url, "--study", "s", "--seed", "1"])
    with pytest.raises(PipelineError, match="missing input .*dvc repro download"):
        tune_worker.main(["--storage", url, "--study", "s", "--data", str(tmp_path / "absent.pt")])
    assert optuna.load_study(study_name="s", storage=url).trials == []


def test_bad_storage_url_is_one_clear_error():
    with pytest.raises(PipelineError, match="cannot open the Optuna storage 'sqlite:////nonexistent-dir/x/t.db'"):
        tune.rdb_storage("sqlite:////nonexistent-dir/x/t.db")


@pytest.mark.parametrize("change, needle", [
    ({"n_workers": 2}, "'tune_cnn.n_workers' above 1 needs tune_cnn.storage .*, got 2"),
    ({"storage": "tune.db"}, "'tune_cnn.storage' must be empty or an Optuna RDB URL.*, got 'tune.db'"),
    ({"n_workers": 0}, "tune_cnn.n_workers"),
])
def test_params_refuse_workers_without_a_shared_storage(raw_params, change, needle):
    raw_params["tune_cnn"].update(change)
    with pytest.raises(PipelineError, match=needle):
        validate(raw_params)


@pytest.fixture
def raw_params():
    return yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
