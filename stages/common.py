"""Paths and helpers shared by the stage scripts (the only place, besides dvc.yaml, that names files)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mnistpipe import data, io
from mnistpipe.errors import PipelineError
from mnistpipe.params import Params, validate

PARAMS = Path("params.yaml")
RAW = Path("data/raw")
TRAIN = Path("data/prepared/train.pt")
TEST = Path("data/prepared/test.pt")
NOISY_TRAIN = Path("data/noisy/train.pt")
NOISY_TEST = Path("data/noisy/test.pt")
DENOISED_TRAIN = Path("data/denoised/train.pt")
DENOISED_TEST = Path("data/denoised/test.pt")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")
BEST_CONFIG = MODELS / "tuned_config.json"   # tune_cnn's best hyperparameters + recipe, read by the retrains
CHECKPOINTS = {name: MODELS / f"{name}.pt" for name in ("baseline", "tuned", "noisy", "dae", "denoised")}
# The stage that writes each checkpoint, for "run `dvc repro <stage>`" messages.
PRODUCERS = {"baseline": "train_baseline", "tuned": "tune_cnn", "noisy": "train_on_noisy", "dae": "train_dae",
             "denoised": "train_on_denoised"}


def load_params() -> Params:
    """Read and validate params.yaml (the whole file, so a typo anywhere fails every stage)."""
    try:
        raw = yaml.safe_load(PARAMS.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{PARAMS} not found; run the stage from the repository root") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise PipelineError(f"{PARAMS} is not valid YAML ({first})") from None
    return validate(raw, source=str(PARAMS))


def load_split(path: Path, *, producer: str) -> dict:
    """Train/val images as float (N, 1, 28, 28) in [0, 1] plus labels, from a prepared or noisy file."""
    t = io.load_tensors(path, producer=producer)
    return {k: data.to_float(v) if k.startswith("x_") else v for k, v in t.items()}


def load_images(path: Path, *, producer: str) -> dict:
    """Like `load_split`, for any tensor file: uint8 images become float, everything else passes through."""
    return load_split(path, producer=producer)
