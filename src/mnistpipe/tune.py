"""Hyperparameter search over the report's six CNN hyperparameters with Optuna (seeded TPE + median pruning).

Each trial calls `train.train_cnn`, the same function the training stages use; pruning hooks in through its
`on_epoch` callback, so nothing about Optuna leaks into the training loop.

With an RDB `storage` (an Optuna URL such as `postgresql+psycopg2://user@host/db` or `sqlite:///tune.db`) the
study lives in the database: any number of worker processes, on any machines, add trials to it (see
`mnistpipe.tune_worker`), and the caller collects the best trial once the study holds `n_trials` trials.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
import torch

from .architecture import CNNConfig
from .errors import PipelineError
from .train import train_cnn

# The study's user attribute that holds its spec: what every worker needs to run trials of the same search.
SPEC_ATTR = "mnistpipe_spec"
# Spec keys that define the search; a study holding trials of other values must not be mixed with this one.
SEARCH_KEYS = ("space", "recipe", "seed", "trial_train_size", "pruner_warmup_epochs", "meta")
# A worker that dies mid-trial stops beating; after the grace period another worker (or the collector) marks
# its trial failed, so the study never waits forever on a RUNNING trial nobody runs.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclass
class TuneResult:
    """The best trial's hyperparameters and val accuracy, every trial as a table, and the study itself."""

    best_params: dict[str, Any]
    best_value: float
    trials: pd.DataFrame
    study: optuna.Study


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict[str, Any]:
    """Draw one value per dimension: `{choices: [...]}` is categorical, `{low, high, log}` int or float."""
    out = {}
    for name, dim in space.items():
        if "choices" in dim:
            out[name] = trial.suggest_categorical(name, list(dim["choices"]))
        elif isinstance(dim["low"], int) and isinstance(dim["high"], int):
            out[name] = trial.suggest_int(name, dim["low"], dim["high"], log=dim.get("log", False))
        else:
            out[name] = trial.suggest_float(name, float(dim["low"]), float(dim["high"]), log=dim.get("log", False))
    return out


def make_objective(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
                   space: dict[str, dict], recipe: dict[str, Any], seed: int, trial_train_size: int = 0,
                   device: str = "auto", worker: str = "") -> Callable[[optuna.Trial], float]:
    """The trial function: train on a seeded subset of `trial_train_size` images, return val accuracy.

    `worker` (a name such as host:pid) is recorded on each trial, so a shared study shows who ran what.
    """
    n = len(x_train)
    if trial_train_size and trial_train_size < n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:trial_train_size]
        x_train, y_train = x_train[idx], y_train[idx]

    def objective(trial: optuna.Trial) -> float:
        if worker:
            trial.set_user_attr("worker", worker)
        hp = suggest(trial, space)

        def on_epoch(epoch: int, record: dict) -> None:
            trial.report(record["val_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            config, training = CNNConfig.split({**hp, **recipe})
            _, result = train_cnn(x_train, y_train, x_val, y_val, config, **training, seed=seed, device=device,
                                  on_epoch=on_epoch)
        except PipelineError as exc:  # a diverged or impossible configuration is a failed trial, not a crash
            trial.set_user_attr("error", str(exc))
            return math.nan
        trial.set_user_attr("train_seconds", result.metrics["train_seconds"])
        return result.metrics["val_acc"]

    return objective


def _sampler_and_pruner(seed: int, pruner_warmup_epochs: int):
    return (optuna.samplers.TPESampler(seed=seed),
            optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=pruner_warmup_epochs))


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage with heartbeats; SQLite waits for its lock instead of failing at once."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                              heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
    except ModuleNotFoundError as exc:
        raise PipelineError(f"the database driver for {url.split('://')[0]} is not installed ({exc}); for "
                            "PostgreSQL run `pip install -e '.[postgres]'`") from None
    except Exception as exc:  # sqlalchemy raises many types for a bad URL or an unreachable server
        first = " ".join(str(exc).split())[:300]
        raise PipelineError(f"cannot open the Optuna storage {url!r} ({type(exc).__name__}: {first}); check "
                            "tune_cnn.storage and that the database server is running") from None


def open_shared_study(storage: str, study_name: str, *, spec: dict[str, Any]) -> optuna.Study:
    """Create the study in `storage`, or reopen it if it holds the same search, and record `spec` on it.

    A study of the same name whose spec differs in any of SEARCH_KEYS is refused: its trials would be
    mixed with trials of another search space, recipe or data.
    """
    sampler, pruner = _sampler_and_pruner(spec["seed"], spec["pruner_warmup_epochs"])
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name=study_name,
                                storage=rdb_storage(storage), load_if_exists=True)
    old = study.user_attrs.get(SPEC_ATTR)
    if old is not None:
        changed = [k for k in SEARCH_KEYS if old.get(k) != spec.get(k)]
        if changed:
            raise PipelineError(f"study {study_name!r} in {storage} holds trials of another search (different "
                                f"{', '.join(changed)}); set a new tune_cnn.study_name or delete the old study "
                                f"with `optuna delete-study --storage URL --study-name {study_name}`")
    study.set_user_attr(SPEC_ATTR, spec)
    return study


def attach(storage: str, study_name: str, *, sampler_seed: int | None) -> tuple[optuna.Study, dict[str, Any]]:
    """Load a study created by `open_shared_study` for a worker; return it with its spec."""
    store = rdb_storage(storage)
    try:
        spec = optuna.load_study(study_name=study_name, storage=store).user_attrs.get(SPEC_ATTR)
    except KeyError:
        spec = None
    if spec is None:
        raise PipelineError(f"no study {study_name!r} made by tune_cnn in {storage}; start `dvc repro tune_cnn` "
                            "with this tune_cnn.storage first (it creates the study), then the workers")
    sampler, pruner = _sampler_and_pruner(spec["seed"] if sampler_seed is None else sampler_seed,
                                          spec["pruner_warmup_epochs"])
    return optuna.load_study(study_name=study_name, storage=store, sampler=sampler, pruner=pruner), spec


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], *, n_trials: int,
               max_trials: int = 0) -> int:
    """Add trials until the study holds `n_trials` in all (from every worker) or this one ran `max_trials`.

    Returns how many trials this call ran. Two workers starting their last trial at the same moment may
    leave the study one trial above `n_trials`.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ran = 0
    while not max_trials or ran < max_trials:
        if len(study.get_trials(deepcopy=False)) >= n_trials:
            break
        study.optimize(objective, n_trials=1)
        ran += 1
    return ran


def collect(study: optuna.Study, *, n_trials: int, poll_seconds: float = 2.0) -> TuneResult:
    """The study's best trial and all its trials, once no trial is running any more.

    Trials of dead workers are failed by the heartbeat check, so the wait ends.
    """
    while any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        optuna.storages.fail_stale_trials(study)
        time.sleep(poll_seconds)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise PipelineError(
            f"none of the {n_trials} tuning trials completed; widen tune_cnn.space or lower its lr range"
        )
    return TuneResult(best_params=dict(study.best_params), best_value=float(study.best_value),
                      trials=study.trials_dataframe(), study=study)


def run_local_workers(storage: str, study_name: str, *, n_workers: int, n_trials: int, seed: int,
                      threads: int = 0) -> None:
    """Run `n_workers` worker processes (`python -m mnistpipe.tune_worker`) on this machine and wait for them.

    Each gets its own sampler seed (seed + 1 + i: equal seeds would propose the same first configurations)
    and an equal share of the trials; `threads` (0 = CPU cores / n_workers) torch threads each.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = threads or max(1, cores // n_workers)
    share = -(-n_trials // n_workers)
    procs = []
    try:
        for i in range(n_workers):
            log = tempfile.TemporaryFile()
            cmd = [sys.executable, "-m", "mnistpipe.tune_worker", "--storage", storage, "--study", study_name,
                   "--seed", str(seed + 1 + i), "--max-trials", str(share), "--threads", str(threads)]
            procs.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log), log))
        failures = []
        for i, (proc, log) in enumerate(procs):
            if proc.wait() != 0:
                log.seek(0)
                lines = log.read().decode("utf-8", errors="replace").strip().splitlines() or ["(no output)"]
                failures.append(f"worker {i + 1} exited with {proc.returncode}: {lines[-1]}")
        if failures:
            raise PipelineError("tuning worker failed: " + "; ".join(failures))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def tune_cnn(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
             space: dict[str, dict], recipe: dict[str, Any], n_trials: int, seed: int, trial_train_size: int = 0,
             storage: str = "", study_name: str = "tune_cnn", pruner_warmup_epochs: int = 1,
             device: str = "auto", n_workers: int = 1, meta: dict[str, Any] | None = None) -> TuneResult:
    """Maximise val accuracy over `space`; each trial trains on a seeded subset of `trial_train_size` images.

    `recipe` holds the fixed architecture/training settings passed to every trial. Trials that diverge count
    as failed (Optuna records them); if no trial completes, a `PipelineError` says what to change.

    Empty `storage`: an in-memory study in this process, a deterministic search. An RDB `storage` URL: the
    study lives there and is topped up to `n_trials` trials, in this process (`n_workers` = 1) or by
    `n_workers` local worker processes; workers started elsewhere may add trials meanwhile. `meta` (for
    instance where the workers find the training data and its checksum) is stored in the study's spec.
    """
    if not storage:
        if n_workers > 1:
            raise PipelineError(f"n_workers={n_workers} needs an Optuna RDB storage URL in tune_cnn.storage "
                                "(for instance sqlite:///../tune.db); an in-memory study lives in one process")
        objective = make_objective(x_train, y_train, x_val, y_val, space=space, recipe=recipe, seed=seed,
                                   trial_train_size=trial_train_size, device=device)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler, pruner = _sampler_and_pruner(seed, pruner_warmup_epochs)
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name=study_name)
        study.optimize(objective, n_trials=n_trials)
        return collect(study, n_trials=n_trials)

    spec = {"space": space, "recipe": recipe, "seed": seed, "trial_train_size": trial_train_size,
            "pruner_warmup_epochs": pruner_warmup_epochs, "meta": meta or {}, "n_trials": n_trials,
            "device": device}
    study = open_shared_study(storage, study_name, spec=spec)
    if len(study.get_trials(deepcopy=False)) >= n_trials:
        pass  # a full study (a rerun, or other machines did the work): only collect
    elif n_workers > 1:
        run_local_workers(storage, study_name, n_workers=n_workers, n_trials=n_trials, seed=seed)
    else:
        objective = make_objective(x_train, y_train, x_val, y_val, space=space, recipe=recipe, seed=seed,
                                   trial_train_size=trial_train_size, device=device,
                                   worker=worker_name())
        run_trials(study, objective, n_trials=n_trials)
    return collect(study, n_trials=n_trials)


def worker_name() -> str:
    """host:pid, recorded on every trial of a shared study."""
    return f"{socket.gethostname()}:{os.getpid()}"


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Matplotlib figures of the search: optimisation history, parameter importance, parallel coordinates."""
    # Imported here: the tuning workers import this module too, and only the stage draws figures.
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    figs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)  # its matplotlib backend
        # A dimension searched over one value (epochs {low: 1, high: 1}) gets a flat axis, which matplotlib widens.
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high", category=UserWarning)
        figs["optimization_history"] = ovm.plot_optimization_history(study).figure
        figs["parallel_coordinate"] = ovm.plot_parallel_coordinate(study).figure
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) >= 2:
            figs["param_importances"] = ovm.plot_param_importances(study).figure
    return figs
