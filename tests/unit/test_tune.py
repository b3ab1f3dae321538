"""mnistpipe.tune and mnistpipe-tune-worker (mnistpipe.commands.tune_worker, with mnistpipe.studydata) on tiny
real data: the in-memory search, the training budget, sampler and pruner settings, SQLite studies, workers, and the
rule that puts the baseline beside the search's best."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from mnistpipe import io, studydata, tensors, tune
from mnistpipe.commands import tune_worker
from mnistpipe.errors import PipelineError
from mnistpipe.params import validate

N_TRIALS = 4
SPACE = {"kernel_size": {"choices": [3, 5]}, "stride": {"choices": [1, 2]}, "dropout": {"low": 0.0, "high": 0.5},
         "lr": {"low": 0.0005, "high": 0.01, "log": True}, "epochs": {"low": 1, "high": 1},
         "batch_size": {"choices": [32, 64]}}
RECIPE = dict(channels=[4, 8], convs_per_block=1, hidden=16, batchnorm=True, weight_decay=5e-4, label_smoothing=0.1,
              max_shift=1)
BASELINE = {"kernel_size": 3, "stride": 1, "dropout": 0.25, "lr": 0.003, "epochs": 1, "batch_size": 64}
SAMPLER = {"n_startup_trials": 2, "multivariate": True}
MEDIAN = {"kind": "median", "warmup_epochs": 0}
HYPERBAND = {"kind": "hyperband", "min_resource": 1, "reduction_factor": 3}
SUBSET = 300


@pytest.fixture(scope="module")
def split(t10k):
    """400 training and 100 validation images of the real MNIST test file, as uint8 (what download writes)."""
    x, y = t10k
    return {"x_train": x[:400].clone(), "y_train": y[:400].clone(), "x_val": x[400:500].clone(),
            "y_val": y[400:500].clone()}


def search(split, **kw):
    """A tiny search; by default 1-epoch trials and a budget of N_TRIALS passes, so N_TRIALS trials."""
    d = {k: tensors.to_float(v) if k.startswith("x_") else v for k, v in split.items()}
    kw = {"space": SPACE, "budget": N_TRIALS, "sampler": SAMPLER, "pruner": MEDIAN, **kw}
    return tune.tune_cnn(d["x_train"], d["y_train"], d["x_val"], d["y_val"], recipe=RECIPE, seed=0,
                         trial_train_size=SUBSET, device="cpu", **kw)


def spec(**kw):
    """A shared study's spec as the tune_cnn stage writes it."""
    return {"space": SPACE, "recipe": RECIPE, "seed": 0, "trial_train_size": SUBSET, "sampler": SAMPLER,
            "pruner": MEDIAN, "meta": {}, "budget": 2, "n_trials": 0, "device": "cpu", **kw}


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
    first = spec()
    tune.open_shared_study(url, "s", spec=first)
    # A larger budget or trial cap, another device: the same search, topped up.
    study = tune.open_shared_study(url, "s", spec={**first, "budget": 5, "n_trials": 5, "device": "auto"})
    assert study.get_trials() == []  # opening adds no trial: no process ever waits on one it did not start
    other = copy.deepcopy(first)
    other["space"]["dropout"]["high"] = 0.3
    with pytest.raises(PipelineError, match="different space.*study_name"):
        tune.open_shared_study(url, "s", spec={**other, "meta": {"data_sha256": "x"}})
    for key, value in [("sampler", {**SAMPLER, "multivariate": False}), ("pruner", HYPERBAND),
                       ("recipe", {**RECIPE, "hidden": 8})]:
        with pytest.raises(PipelineError, match=f"different {key}\\b"):
            tune.open_shared_study(url, "s", spec={**first, key: value})


def test_four_worker_processes_share_an_sqlite_study(split, tmp_path):
    """Four workers on one SQLite study (on a 2-core machine: more processes than cores): every trial is told once
    and finishes, and the study's best is what the search returns."""
    path = tmp_path / "train.pt"
    io.save_tensors(path, split)
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    n_trials = 2 * N_TRIALS
    # The cap ends this search, and gives each worker an even share (the budget alone would not).
    found = search(split, storage=url, n_workers=4, n_trials=n_trials, budget=100,
                   meta={"data": str(path), "data_sha256": studydata.data_fingerprint(path)})
    trials = found.study.trials
    # Workers that check the cap at the same moment may each start one more trial (`tune.run_trials` says so).
    assert n_trials <= len(trials) <= n_trials + 3, len(trials)
    told = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}  # no FAIL, RUNNING or WAITING
    assert all(t.state in told for t in trials), [t.state.name for t in trials]
    assert [t.number for t in trials] == list(range(len(trials)))
    workers = [t.user_attrs["worker"] for t in trials]
    assert len(set(workers)) == 4 and tune.worker_name() not in workers, workers
    assert found.best_value == optuna.load_study(study_name="tune_cnn", storage=url).best_value


def test_worker_refuses_a_missing_study_and_other_data(split, tmp_path):
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    with pytest.raises(PipelineError, match="no study 'nope'.*dvc repro tune_cnn"):
        tune_worker.main(["--storage", url, "--study", "nope"])
    path = tmp_path / "train.pt"
    io.save_tensors(path, split)
    tune.open_shared_study(url, "s", spec=spec(meta={"data": str(path), "data_sha256": "0" * 64}))
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


def test_the_baseline_stays_unless_the_search_scores_strictly_higher():
    assert tune.baseline_wins(0.9, 0.9) and tune.baseline_wins(0.91, 0.9)
    assert not tune.baseline_wins(0.9, 0.9001)


def test_budget_counts_images_of_every_trial(in_memory):
    """Each 1-epoch trial of the 300-image subset spends 300 images; a budget of N_TRIALS passes runs N_TRIALS."""
    seen = [t.user_attrs["images_seen"] for t in in_memory.study.trials]
    assert seen == [SUBSET] * N_TRIALS and in_memory.budget_used == SUBSET * N_TRIALS
    assert all(t.user_attrs["train_seconds"] > 0 for t in in_memory.study.trials)
    # A fractional budget: a trial started before it is spent still runs, so 2.5 passes start 3 trials.
    assert tune.images_seen(in_memory.study) == in_memory.budget_used


def test_fractional_budget_and_trial_cap(split):
    assert len(search(split, budget=2.5, pruner={"kind": "none"}).study.trials) == 3
    assert len(search(split, budget=100, n_trials=2).study.trials) == 2


def test_hyperband_search_spends_its_budget(split):
    """Multi-fidelity: epochs 1-3 are the resource. Pruned trials count the epochs they ran, and no trial starts
    once the budget is spent."""
    space = {**SPACE, "epochs": {"low": 1, "high": 3}}
    found = search(split, space=space, budget=12, pruner=HYPERBAND)
    trials = found.study.trials
    for t in trials:
        epochs_run = max(t.intermediate_values)
        assert t.user_attrs["images_seen"] == epochs_run * SUBSET
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert epochs_run == t.params["epochs"]
        else:
            # The pruner is asked after every epoch, the last one included.
            assert t.state == optuna.trial.TrialState.PRUNED and epochs_run <= t.params["epochs"]
    # Some trial was stopped at a rung (on these 300 images, trial 3 after epoch 1): the pruner is really active.
    assert found.n_pruned == sum(t.state == optuna.trial.TrialState.PRUNED for t in trials) >= 1
    used = [t.user_attrs["images_seen"] for t in trials]
    assert sum(used) >= 12 * SUBSET > sum(used[:-1]), used  # the last trial started before the budget was spent
    assert found.budget_used == sum(used)
    # Deterministic, like every in-memory search.
    again = search(split, space=space, budget=12, pruner=HYPERBAND)
    assert outcome(again.study) == outcome(found.study)


def test_failing_trials_still_spend_the_budget(split):
    """Every trial fails (batch larger than the subset): each counts one pass, so the search ends, and says why."""
    space = {**SPACE, "batch_size": {"choices": [512]}}
    with pytest.raises(PipelineError, match="none of the 3 tuning trials completed; widen tune_cnn.space"):
        search(split, space=space, budget=3)


def test_sampler_and_pruner_follow_the_params():
    space = {**SPACE, "epochs": {"low": 2, "high": 5}}
    sampler, pruner = tune.make_sampler_and_pruner(seed=3, sampler={"n_startup_trials": 7, "multivariate": True},
                                                   pruner={"kind": "median", "warmup_epochs": 1}, space=space)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert (sampler._n_startup_trials, sampler._multivariate) == (7, True)
    # warmup_epochs 1: epoch 1 always runs, the first prune can come after epoch 2 (epochs are reported from 1).
    assert isinstance(pruner, optuna.pruners.MedianPruner)
    assert (pruner._n_warmup_steps, pruner._n_startup_trials) == (2, tune.MEDIAN_STARTUP_TRIALS)
    sampler, pruner = tune.make_sampler_and_pruner(seed=3, sampler={"n_startup_trials": 10, "multivariate": False},
                                                   pruner=HYPERBAND, space=space)
    assert sampler._multivariate is False
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (1, 5, 3)
    _, pruner = tune.make_sampler_and_pruner(seed=0, sampler=SAMPLER, pruner=HYPERBAND,
                                             space={**SPACE, "epochs": {"choices": [2, 6, 4]}})
    assert pruner._max_resource == 6
    _, pruner = tune.make_sampler_and_pruner(seed=0, sampler=SAMPLER, pruner={"kind": "none"}, space=SPACE)
    assert isinstance(pruner, optuna.pruners.NopPruner)


def test_the_params_file_drives_the_search(raw_params):
    """params.yaml's tune_cnn section and top-level six make a valid search (the schema keeps the baseline
    inside the space: test_params.py)."""
    p = validate(raw_params)
    sampler, pruner = tune.make_sampler_and_pruner(seed=p.seed, sampler=p.tune_cnn.sampler.model_dump(),
                                                   pruner=p.tune_cnn.pruner.model_dump(),
                                                   space=p.tune_cnn.space.model_dump())
    assert sampler._n_startup_trials == raw_params["tune_cnn"]["sampler"]["n_startup_trials"]


def test_worker_respects_the_study_budget(split, tmp_path):
    """A worker joining a study stops once the study's trials, every worker's, have spent the budget."""
    path = tmp_path / "train.pt"
    io.save_tensors(path, split)
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    study = tune.open_shared_study(url, "s", spec=spec(meta={"data": str(path), "data_sha256": ""}, budget=3))
    # The stage's own process runs a trial too (tune.tune_cnn does, with one worker); workers add to it.
    d = {k: tensors.to_float(v) if k.startswith("x_") else v for k, v in split.items()}
    objective = tune.make_objective(d["x_train"], d["y_train"], d["x_val"], d["y_val"], space=SPACE, recipe=RECIPE,
                                    seed=0, trial_train_size=SUBSET, device="cpu", worker="stage")
    assert tune.run_trials(study, objective, budget_images=3 * SUBSET, max_trials=1) == 1
    assert tune_worker.main(["--storage", url, "--study", "s", "--seed", "1"]) == 2
    assert tune_worker.main(["--storage", url, "--study", "s", "--seed", "2"]) == 0  # spent: nothing to add
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert trials[0].user_attrs["worker"] == "stage" and {t.user_attrs["worker"] for t in trials[1:]} != {"stage"}
    assert [t.user_attrs["images_seen"] for t in trials] == [SUBSET] * 3


def test_score_is_what_an_unpruned_trial_of_the_same_configuration_gets(split, in_memory):
    """select_cnn's footing: `tune.score` of a configuration equals the value the search's own (unpruned) trial of
    it got, so the baseline, scored afterwards, meets the search's best on the same objective."""
    best = in_memory.study.trials[in_memory.best_trial]
    assert best.state == optuna.trial.TrialState.COMPLETE and best.value == in_memory.best_value
    d = {k: tensors.to_float(v) if k.startswith("x_") else v for k, v in split.items()}
    value = tune.score(d["x_train"], d["y_train"], d["x_val"], d["y_val"], hp=best.params, recipe=RECIPE, seed=0,
                       trial_train_size=SUBSET, device="cpu")
    assert value == in_memory.best_value
