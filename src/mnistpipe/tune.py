"""Hyperparameter search over the report's six CNN hyperparameters with Optuna (seeded TPE + median pruning).

Each trial calls `train.train_cnn`, the same function the training stages use; pruning hooks in through its
`on_epoch` callback, so nothing about Optuna leaks into the training loop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
import torch

from .errors import PipelineError
from .train import train_cnn


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


def tune_cnn(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
             space: dict[str, dict], recipe: dict[str, Any], n_trials: int, seed: int, trial_train_size: int = 0,
             storage: str = "", study_name: str = "tune_cnn", pruner_warmup_epochs: int = 1,
             device: str = "auto") -> TuneResult:
    """Maximise val accuracy over `space`; each trial trains on a seeded subset of `trial_train_size` images.

    `recipe` holds the fixed architecture/training settings passed to every trial. Trials that diverge count
    as failed (Optuna records them); if no trial completes, a `PipelineError` says what to change.
    """
    n = len(x_train)
    if trial_train_size and trial_train_size < n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:trial_train_size]
        x_train, y_train = x_train[idx], y_train[idx]

    def objective(trial: optuna.Trial) -> float:
        hp = suggest(trial, space)

        def on_epoch(epoch: int, record: dict) -> None:
            trial.report(record["val_acc"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        try:
            _, result = train_cnn(x_train, y_train, x_val, y_val, **hp, **recipe, seed=seed, device=device,
                                  on_epoch=on_epoch)
        except PipelineError as exc:  # a diverged or impossible configuration is a failed trial, not a crash
            trial.set_user_attr("error", str(exc))
            return math.nan
        trial.set_user_attr("train_seconds", result.metrics["train_seconds"])
        return result.metrics["val_acc"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=pruner_warmup_epochs)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name=study_name,
                                storage=storage or None, load_if_exists=bool(storage))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        study.optimize(objective, n_trials=n_trials)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise PipelineError(
            f"none of the {n_trials} tuning trials completed; widen tune_cnn.space or lower its lr range"
        )
    return TuneResult(best_params=dict(study.best_params), best_value=float(study.best_value),
                      trials=study.trials_dataframe(), study=study)


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Matplotlib figures of the search: optimisation history, parameter importance, parallel coordinates."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    figs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        figs["optimization_history"] = ovm.plot_optimization_history(study).figure
        figs["parallel_coordinate"] = ovm.plot_parallel_coordinate(study).figure
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) >= 2:
            figs["param_importances"] = ovm.plot_param_importances(study).figure
    return figs
