"""`mnistpipe-tune-worker`: add trials to a shared Optuna study that the tune_cnn stage created.

The stage stores the study's spec (search space, recipe, sampler, pruner, seed, trial subset size, training
budget, and where the training data lies with its SHA-256) in the study itself, so a worker needs only the
storage URL, the study name and the same training data: run it from the root of a checkout whose
`data/prepared/train.pt` comes from the same commit (`dvc pull` or `dvc repro download`), or pass `--data`. A
file with another checksum is refused, so trials of other data never enter the study. Workers stop once the
study's trials, every worker's together, have spent the budget.

    mnistpipe-tune-worker --storage postgresql+psycopg2://user:password@host/db --study tune_cnn
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .. import tune
from ..errors import PipelineError
from ..runner import run_stage
from ..studydata import load_training_data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The worker's command line."""
    ap = argparse.ArgumentParser(prog="mnistpipe-tune-worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", required=True, help="Optuna RDB URL of the study (tune_cnn.storage)")
    ap.add_argument("--study", required=True, help="study name (tune_cnn.study_name)")
    ap.add_argument("--data", help="training tensor file (default: the path the stage recorded, from the cwd)")
    ap.add_argument("--seed", type=int, help="sampler seed of this worker (default: random; give each worker its "
                    "own, or they propose the same first configurations)")
    ap.add_argument("--max-trials", type=int, default=0, help="stop after this many trials (0 = until the study "
                    "has spent tune_cnn.budget or holds tune_cnn.n_trials trials)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default, one per core)")
    ap.add_argument("--device", help="auto, cpu or cuda (default: the study's, params.yaml's device)")
    ap.add_argument("--traceback", action="store_true", help="show the traceback of a user error")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Join the study and run trials until its budget is spent; return how many this worker ran."""
    args = parse_args(argv)
    if args.max_trials < 0 or args.threads < 0:
        raise PipelineError("--max-trials and --threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    study, spec = tune.attach(args.storage, args.study, sampler_seed=seed)
    meta = spec.get("meta") or {}
    path = Path(args.data or meta.get("data") or "")
    if not str(path) or str(path) == ".":
        raise PipelineError(f"study {args.study!r} does not say where its training data lies; pass --data")
    d = load_training_data(path, sha256=meta.get("data_sha256", ""), study_name=args.study)
    objective = tune.make_objective(d["x_train"], d["y_train"], d["x_val"], d["y_val"], space=spec["space"],
                                    recipe=spec["recipe"], seed=spec["seed"],
                                    trial_train_size=spec["trial_train_size"],
                                    device=args.device or spec["device"], worker=tune.worker_name())
    budget_images = tune.images_for(spec["budget"], n_train=len(d["x_train"]),
                                    trial_train_size=spec["trial_train_size"])
    return tune.run_trials(study, objective, budget_images=budget_images, n_trials=spec["n_trials"],
                           max_trials=args.max_trials)


def cli() -> None:
    """Console-script entry point: user errors become one `error:` line and exit status 2."""
    run_stage(main)


if __name__ == "__main__":
    cli()
