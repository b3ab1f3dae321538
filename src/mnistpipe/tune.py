"""Hyperparameter search over the report's six CNN hyperparameters with Optuna (seeded TPE, optional pruning).

Each trial calls `train.train_cnn`, the same function the training stages use; pruning hooks in through its
`on_epoch` callback, so nothing about Optuna leaks into the training loop.

The search is sized by a training budget, not a trial count: `budget` passes over the trial subset (subset
images x epochs, summed over all trials; a pruned trial counts the epochs it ran). Trials start until the
budget is spent, so searches with and without pruning compare at equal compute. The baseline is not a trial:
`score` puts it on the footing of the search's best trial afterwards, and `baseline_wins` is the rule that
keeps it.

With an RDB `storage` (an Optuna URL such as `postgresql+psycopg2://user@host/db` or `sqlite:///tune.db`) the
study lives in the database: any number of worker processes, on any machines, add trials to it (see
`mnistpipe.commands.tune_worker`), and the caller collects the best trial once the study's budget is spent.
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

from .errors import PipelineError
from .models import CNN
from .params import split_cnn
from .train import train_cnn

# The study's user attribute that holds its spec: what every worker needs to run trials of the same search.
SPEC_ATTR = "mnistpipe_spec"
# Spec keys that define the search; a study holding trials of other values must not be mixed with this one.
SEARCH_KEYS = ("space", "recipe", "seed", "trial_train_size", "sampler", "pruner", "meta")
# Completed trials before the median pruner may prune.
MEDIAN_STARTUP_TRIALS = 3
# A worker that dies mid-trial stops beating; after the grace period another worker (or the collector) marks
# its trial failed, so the study never waits forever on a RUNNING trial nobody runs.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60


@dataclass
class TuneResult:
    """The best trial's hyperparameters, val accuracy and number, the training budget spent (images), the number
    of pruned trials, every trial as a table, and the study itself."""

    best_params: dict[str, Any]
    best_value: float
    trials: pd.DataFrame
    study: optuna.Study
    best_trial: int = 0
    budget_used: int = 0
    n_pruned: int = 0


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


def subset_size(n: int, trial_train_size: int) -> int:
    """Images each trial trains on: `trial_train_size`, or all `n` when it is 0 or larger."""
    return min(trial_train_size, n) if trial_train_size else n


def images_for(budget: float, *, n_train: int, trial_train_size: int) -> int:
    """The training budget in images: `budget` passes over each trial's subset of the `n_train` images."""
    return math.ceil(budget * subset_size(n_train, trial_train_size))


def trial_subset(x: torch.Tensor, y: torch.Tensor, *, seed: int,
                 trial_train_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded subset of `trial_train_size` training images every trial trains on (all when 0 or larger)."""
    n = len(x)
    if trial_train_size and trial_train_size < n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:trial_train_size]
        return x[idx], y[idx]
    return x, y


def score(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
          hp: dict[str, Any], recipe: dict[str, Any], seed: int, trial_train_size: int = 0,
          device: str = "auto") -> float:
    """The search's objective for the six hyperparameters `hp`, as an unpruned trial would get it: val accuracy
    after training on the same seeded subset with the same seed. It puts a configuration the search never ran
    (the baseline) on the footing of the search's best trial."""
    x_train, y_train = trial_subset(x_train, y_train, seed=seed, trial_train_size=trial_train_size)
    config, training = split_cnn({**hp, **recipe})
    result = train_cnn(CNN(config, seed=seed), x_train, y_train, x_val, y_val, **training, seed=seed, device=device)
    return result.metrics["val_acc"]


def baseline_wins(baseline_value: float, best_value: float) -> bool:
    """Whether the baseline stays the tuned configuration: unless the search's best trial scores strictly higher
    on the same objective (`score`), the simpler, known configuration is kept."""
    return baseline_value >= best_value


def make_objective(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
                   space: dict[str, dict], recipe: dict[str, Any], seed: int, trial_train_size: int = 0,
                   device: str = "auto", worker: str = "") -> Callable[[optuna.Trial], float]:
    """The trial function: train on a seeded subset of `trial_train_size` images, return val accuracy.

    Every epoch records the trial's `images_seen` and `train_seconds` (user attributes) before the pruner is
    asked, so a pruned trial counts what it ran. `worker` (a name such as host:pid) is recorded on each trial,
    so a shared study shows who ran what.
    """
    x_train, y_train = trial_subset(x_train, y_train, seed=seed, trial_train_size=trial_train_size)
    per_pass = len(x_train)

    def objective(trial: optuna.Trial) -> float:
        if worker:
            trial.set_user_attr("worker", worker)
        hp = suggest(trial, space)
        done = 0

        def on_epoch(epoch: int, record: dict) -> None:
            nonlocal done
            done = epoch
            trial.set_user_attr("images_seen", epoch * per_pass)
            trial.set_user_attr("train_seconds", record["train_seconds"])
            trial.report(record["val_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            config, training = split_cnn({**hp, **recipe})
            result = train_cnn(CNN(config, seed=seed), x_train, y_train, x_val, y_val, **training, seed=seed,
                               device=device, on_epoch=on_epoch)
        except PipelineError as exc:  # a diverged or impossible configuration is a failed trial, not a crash
            trial.set_user_attr("error", str(exc))
            # It failed in (or before) epoch done + 1: counting that epoch makes every trial spend budget, so a
            # search whose every trial fails still ends.
            trial.set_user_attr("images_seen", (done + 1) * per_pass)
            return math.nan
        return result.metrics["val_acc"]

    return objective


def make_sampler_and_pruner(*, seed: int, sampler: dict[str, Any], pruner: dict[str, Any],
                            space: dict[str, dict]) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """The seeded TPE sampler and the pruner of params.yaml's `tune_cnn.sampler` / `tune_cnn.pruner`.

    `sampler`: {n_startup_trials, multivariate}. `pruner`: {kind: median, warmup_epochs} (a trial runs its first
    `warmup_epochs` epochs unpruned; the first MEDIAN_STARTUP_TRIALS trials are never pruned), {kind: hyperband,
    min_resource, reduction_factor} (epochs are the resource, up to the most `space.epochs` allows) or
    {kind: none}.
    """
    tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=sampler["n_startup_trials"],
                                     multivariate=sampler["multivariate"])
    kind = pruner["kind"]
    if kind == "median":
        # Epochs are reported from 1 and Optuna may prune at step == n_warmup_steps.
        return tpe, optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                                n_warmup_steps=pruner["warmup_epochs"] + 1)
    if kind == "hyperband":
        epochs = space["epochs"]
        top = int(max(epochs["choices"]) if "choices" in epochs else epochs["high"])
        return tpe, optuna.pruners.HyperbandPruner(min_resource=pruner["min_resource"], max_resource=top,
                                                   reduction_factor=pruner["reduction_factor"])
    return tpe, optuna.pruners.NopPruner()  # kind "none": the schema admits no other


def _from_spec(spec: dict[str, Any], seed: int | None = None):
    return make_sampler_and_pruner(seed=spec["seed"] if seed is None else seed, sampler=spec["sampler"],
                                   pruner=spec["pruner"], space=spec["space"])


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
    mixed with trials of another search space, recipe, sampler, pruner or data.
    """
    sampler, pruner = _from_spec(spec)
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
    sampler, pruner = _from_spec(spec, sampler_seed)
    return optuna.load_study(study_name=study_name, storage=store, sampler=sampler, pruner=pruner), spec


def images_seen(study: optuna.Study) -> int:
    """Training images of all the study's trials so far (running ones included, up to their last epoch)."""
    return sum(int(t.user_attrs.get("images_seen", 0)) for t in study.get_trials(deepcopy=False))


def search_done(study: optuna.Study, *, budget_images: int, n_trials: int = 0) -> bool:
    """True once the study's trials have spent `budget_images`, or it holds `n_trials` (0 = no cap) trials."""
    if n_trials and len(study.get_trials(deepcopy=False)) >= n_trials:
        return True
    return images_seen(study) >= budget_images


def run_trials(study: optuna.Study, objective: Callable[[optuna.Trial], float], *, budget_images: int,
               n_trials: int = 0, max_trials: int = 0) -> int:
    """Start trials until the study (every worker's trials) has spent `budget_images` training images or holds
    `n_trials` trials (0 = no cap), or this call ran `max_trials` (0 = no limit).

    A trial started before the budget is spent runs to its end (or pruning), so the search spends a little
    more than the budget; workers starting trials at the same moment overshoot it, or the cap, a little more.
    Returns how many trials this call ran.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ran = 0
    while (not max_trials or ran < max_trials) and not search_done(study, budget_images=budget_images,
                                                                   n_trials=n_trials):
        study.optimize(objective, n_trials=1)
        ran += 1
    return ran


def collect(study: optuna.Study, *, poll_seconds: float = 2.0) -> TuneResult:
    """The study's best trial and all its trials, once no trial is running any more.

    Trials of dead workers are failed by the heartbeat check, so the wait ends.
    """
    while any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        optuna.storages.fail_stale_trials(study)
        time.sleep(poll_seconds)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise PipelineError(
            f"none of the {len(trials)} tuning trials completed; widen tune_cnn.space or lower its lr range"
        )
    best = study.best_trial
    return TuneResult(best_params=dict(best.params), best_value=float(best.value), trials=study.trials_dataframe(),
                      study=study, best_trial=best.number, budget_used=images_seen(study),
                      n_pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in trials))


def run_local_workers(storage: str, study_name: str, *, n_workers: int, n_trials: int, seed: int,
                      threads: int = 0) -> None:
    """Run `n_workers` worker processes (`python -m mnistpipe.commands.tune_worker`) on this machine and wait for them.

    Each gets its own sampler seed (seed + 1 + i: equal seeds would propose the same first configurations)
    and `threads` (0 = CPU cores / n_workers) torch threads; they stop when the study's budget is spent, and
    with a trial cap `n_trials` (0 = none) each runs at most an equal share of it.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = threads or max(1, cores // n_workers)
    share = -(-n_trials // n_workers) if n_trials else 0
    procs = []
    try:
        for i in range(n_workers):
            log = tempfile.TemporaryFile()
            cmd = [sys.executable, "-m", "mnistpipe.commands.tune_worker", "--storage", storage, "--study", study_name,
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
             space: dict[str, dict], recipe: dict[str, Any], budget: float, seed: int, sampler: dict[str, Any],
             pruner: dict[str, Any], n_trials: int = 0, trial_train_size: int = 0, storage: str = "",
             study_name: str = "tune_cnn",
             device: str = "auto", n_workers: int = 1, meta: dict[str, Any] | None = None) -> TuneResult:
    """Maximise val accuracy over `space`; each trial trains on a seeded subset of `trial_train_size` images.

    Trials start until they have spent `budget` passes over that subset (see the module docstring) or number
    `n_trials` (0 = no cap). `recipe` holds the fixed architecture/training settings passed to every trial;
    `sampler` and `pruner` are as `make_sampler_and_pruner` takes them, the sampler seeded with `seed` (which
    also draws the subset).
    Trials that diverge count as failed (Optuna records them); if no trial completes, a `PipelineError` says
    what to change.

    Empty `storage`: an in-memory study in this process, a deterministic search. An RDB `storage` URL: the
    study lives there and is topped up until its budget is spent, in this process (`n_workers` = 1) or by
    `n_workers` local worker processes; workers started elsewhere may add trials meanwhile. `meta` (for
    instance where the workers find the training data and its checksum) is stored in the study's spec.
    """
    budget_images = images_for(budget, n_train=len(x_train), trial_train_size=trial_train_size)

    def objective(worker: str = "") -> Callable[[optuna.Trial], float]:
        return make_objective(x_train, y_train, x_val, y_val, space=space, recipe=recipe, seed=seed,
                              trial_train_size=trial_train_size, device=device, worker=worker)

    if not storage:  # one process (the schema allows n_workers > 1 only with a storage)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        made_sampler, made_pruner = make_sampler_and_pruner(seed=seed, sampler=sampler, pruner=pruner, space=space)
        study = optuna.create_study(direction="maximize", sampler=made_sampler, pruner=made_pruner,
                                    study_name=study_name)
        run_trials(study, objective(), budget_images=budget_images, n_trials=n_trials)
        return collect(study)

    spec = {"space": space, "recipe": recipe, "seed": seed, "trial_train_size": trial_train_size,
            "sampler": sampler, "pruner": pruner, "meta": meta or {}, "budget": budget, "n_trials": n_trials,
            "device": device}
    study = open_shared_study(storage, study_name, spec=spec)
    if not search_done(study, budget_images=budget_images, n_trials=n_trials):
        if n_workers > 1:
            run_local_workers(storage, study_name, n_workers=n_workers, n_trials=n_trials, seed=seed)
        else:
            run_trials(study, objective(worker_name()), budget_images=budget_images, n_trials=n_trials)
    return collect(study)


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
