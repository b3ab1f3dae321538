"""Is the pipeline's tuned CNN better than its baseline by more than the seed-to-seed spread?

    python -m mnistpipe.lab.seedspread --data data/prepared/train.pt --params params.yaml \
        --tuned models/tuned_config.json --metrics metrics/tune_cnn/metrics.json --seeds 5 \
        --json benchmarks/seed-spread-mnist.json

Retrains the configuration a `dvc repro` chose (`models/tuned_config.json`, written by select_cnn) and the
baseline (params.yaml's six and recipe) on the whole training split at training seeds 0..N-1, scores each on the
validation split, and tests tuned - baseline with Welch's t-test (`tunecompare.spread`). The search's own cost
comes from tune_cnn's metrics, so the result says what the search bought and what it cost.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path
from typing import Any

import torch

from .. import io, params, tensors
from ..errors import PipelineError
from ..models import CNN
from ..runner import run_stage
from ..train import train_cnn
from .cli import read_params
from .tunecompare import spread, spread_sentence


def retrain_over_seeds(d: dict[str, torch.Tensor], hp: dict[str, Any], seeds: range, *,
                       device: str = "auto") -> list[float]:
    """Val accuracy of the flat configuration `hp` (six + recipe) trained on `d`'s training split at each seed."""
    config, training = params.split_cnn(hp)
    return [train_cnn(CNN(config, seed=s), d["x_train"], d["y_train"], d["x_val"], d["y_val"], **training, seed=s,
                      device=device).metrics["val_acc"] for s in seeds]


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Retrain both configurations over the seeds, print the verdict, optionally write JSON."""
    ap = argparse.ArgumentParser(prog="python -m mnistpipe.lab.seedspread", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/prepared/train.pt"), help="download's training file")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--tuned", type=Path, default=Path("models/tuned_config.json"), help="select_cnn's choice")
    ap.add_argument("--metrics", type=Path, default=Path("metrics/tune_cnn/metrics.json"),
                    help="tune_cnn's metrics (the search's seconds)")
    ap.add_argument("--seeds", type=int, default=5, help="training seeds 0..N-1 (at least 2)")
    ap.add_argument("--device", help="auto, cpu or cuda (default: params.yaml's device)")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--traceback", action="store_true", help="show the traceback of a user error")
    args = ap.parse_args(argv)
    if args.seeds < 2:
        raise PipelineError("--seeds must be at least 2: a spread needs two seeds")
    run = read_params(args.params)
    t = tensors.checked(io.load_tensors(args.data, producer="download"), ("x_train", "y_train", "x_val", "y_val"),
                        source=str(args.data), producer="download")
    d = {k: tensors.to_float(v) if k.startswith("x_") else v for k, v in t.items()}
    chosen = io.read_json(args.tuned, producer="select_cnn")
    tuned_hp = params.tuned_hyperparameters(chosen, source=str(args.tuned), producer="select_cnn")
    baseline_hp = {**run.baseline(), **run.recipe.model_dump(mode="json")}
    search = io.read_json(args.metrics, producer="tune_cnn")
    device = args.device or run.device
    seeds = range(args.seeds)
    sp = spread({k: tuned_hp[k] for k in params.BASELINE_KEYS}, retrain_over_seeds(d, tuned_hp, seeds, device=device),
                retrain_over_seeds(d, baseline_hp, seeds, device=device))
    result = {"dataset": run.dataset, "date": datetime.date.today().isoformat(), "commit": _commit(),
              "chosen": chosen.get("chosen"), "search_seconds": search.get("search_seconds"),
              "threads": torch.get_num_threads(), "spread": sp}
    print(f"{run.dataset}: {spread_sentence(sp)}")
    if args.json:
        io.write_json(args.json, result)
    return result


if __name__ == "__main__":
    run_stage(main)
