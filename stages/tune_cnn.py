"""Search the report's six CNN hyperparameters with Optuna, then retrain the best trial's configuration on all data.

The search depends on its own section, the recipe and the data only, not on the baseline's six: a change of the
baseline (`dvc exp run -S dropout=0`) leaves it cached. select_cnn puts the baseline beside its winner.
"""

import time

from common import CHECKPOINTS, METRICS, PLOTS, SEARCH_CONFIG, TRAIN, load_params, load_split
from mnistpipe import io, models, params, studydata, tracking, train, tune
from mnistpipe.runner import run_stage


def main() -> None:
    run = load_params()
    p, seed = run.tune_cnn, run.seed
    recipe = run.recipe.model_dump(mode="json")
    d = load_split(TRAIN, producer="download")
    t0 = time.perf_counter()
    # Workers of a shared study (local or on other machines) find the data, and check it, through the study.
    meta = {"data": TRAIN.as_posix(), "data_sha256": studydata.data_fingerprint(TRAIN)} if p.storage else {}
    found = tune.tune_cnn(d["x_train"], d["y_train"], d["x_val"], d["y_val"], space=p.space.model_dump(),
                          recipe=recipe, budget=p.budget, n_trials=p.n_trials, seed=seed,
                          sampler=p.sampler.model_dump(), pruner=p.pruner.model_dump(),
                          trial_train_size=p.trial_train_size, storage=p.storage, study_name=p.study_name,
                          device=run.device, n_workers=p.n_workers, meta=meta)
    search_seconds = time.perf_counter() - t0
    hp = {**found.best_params, **recipe}
    config, training = params.split_cnn(hp)
    model = models.CNN(config, seed=seed)
    with tracking.live_log(METRICS / "tune_cnn") as live:
        result = train.train_cnn(model, d["x_train"], d["y_train"], d["x_val"], d["y_val"], **training, seed=seed,
                                 device=run.device, on_epoch=live.log_epoch, progress=True)
        live.summary.update(result.metrics, best_trial_val_acc=found.best_value, best_trial=found.best_trial,
                            search_seconds=search_seconds, n_trials=len(found.trials), n_pruned=found.n_pruned,
                            budget_used=found.budget_used)
        io.save_checkpoint(CHECKPOINTS["search_best"], model, kind="cnn", stage="tune_cnn",
                           meta={"train_set": "clean", "dataset": run.dataset, **result.metrics})
    io.write_json(SEARCH_CONFIG, {"hyperparameters": hp, "best_trial_val_acc": found.best_value})
    with io.atomic_path(METRICS / "tune_cnn_trials.csv") as tmp:
        found.trials.to_csv(tmp, index=False)
    for name, fig in tune.study_figures(found.study).items():
        with io.atomic_path(PLOTS / "tune_cnn" / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    run_stage(main)
