"""Choose the tuned CNN: the search's best trial or the baseline, whichever scores higher on the search's objective.

The baseline is trained as a trial would be (tune_cnn.trial_train_size images, the same seed) and scored on the
validation split, so both candidates meet on the same footing; a tie keeps the baseline. The chosen network,
already trained on the whole training split (by tune_cnn or train_baseline), becomes models/tuned.pt. A change
of the baseline that leaves the choice alone rewrites the same bytes, and DVC keeps what follows cached.
"""

from common import (
    BEST_CONFIG,
    CHECKPOINTS,
    METRICS,
    PRODUCERS,
    SEARCH_CONFIG,
    TRAIN,
    load_params,
    load_split,
    read_checked_json,
)
from mnistpipe import io, models, params, tune
from mnistpipe.runner import run_stage


def main() -> None:
    run = load_params()
    d = load_split(TRAIN, producer="download")
    recipe = run.recipe.model_dump(mode="json")
    search = read_checked_json(SEARCH_CONFIG, producer="tune_cnn", numbers=("best_trial_val_acc",))
    best_hp = params.tuned_hyperparameters(search, source=str(SEARCH_CONFIG), producer="tune_cnn")
    # Both candidates are read (and checked) before the baseline trains: a broken input fails in seconds.
    ckpts = {name: io.load_checkpoint(CHECKPOINTS[name], kind="cnn", producer=PRODUCERS[name])
             for name in ("baseline", "search_best")}
    baseline_value = tune.score(d["x_train"], d["y_train"], d["x_val"], d["y_val"], hp=run.baseline(),
                                recipe=recipe, seed=run.seed, trial_train_size=run.tune_cnn.trial_train_size,
                                device=run.device)
    winner_is_baseline = tune.baseline_wins(baseline_value, search["best_trial_val_acc"])
    name = "baseline" if winner_is_baseline else "search_best"
    model = models.from_checkpoint(ckpts[name], path=str(CHECKPOINTS[name]))
    hp = {**run.baseline(), **recipe} if winner_is_baseline else best_hp
    io.save_checkpoint(CHECKPOINTS["tuned"], model, kind="cnn", stage="select_cnn", meta=ckpts[name].get("meta"))
    io.write_json(BEST_CONFIG, {"hyperparameters": hp, "chosen": name})
    io.write_json(METRICS / "select_cnn.json", {"baseline_trial_val_acc": baseline_value,
                                                "best_trial_val_acc": search["best_trial_val_acc"],
                                                "winner_is_baseline": winner_is_baseline})


if __name__ == "__main__":
    run_stage(main)
