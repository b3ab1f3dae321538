"""Paths and helpers shared by the stage scripts (the only place, besides dvc.yaml, that names files)."""

from __future__ import annotations

from pathlib import Path

from mnistpipe import io, params, tensors
from mnistpipe.errors import PipelineError
from mnistpipe.params import Params

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
SEARCH_CONFIG = MODELS / "search_best.json"  # tune_cnn's best trial: its hyperparameters + recipe and objective
BEST_CONFIG = MODELS / "tuned_config.json"    # select_cnn's choice (search winner or baseline), read by the retrains
PRODUCERS = io.CHECKPOINT_PRODUCERS  # checkpoint name -> the stage that writes it
CHECKPOINTS = {name: MODELS / f"{name}.pt" for name in PRODUCERS}
# The tensors of each data file: images x_* (uint8, N x 28 x 28) and labels y_* (int64, N), checked on every load.
CONTENTS = {TRAIN: ("x_train", "y_train", "x_val", "y_val"), TEST: ("x_test", "y_test"),
            NOISY_TRAIN: ("x_train", "x_val"), NOISY_TEST: ("x_test",),
            DENOISED_TRAIN: ("x_train", "x_val"), DENOISED_TEST: ("x_test",)}


def load_params() -> Params:
    """params.yaml, validated (all of it, so a typo anywhere fails every stage)."""
    try:
        text = PARAMS.read_text()
    except FileNotFoundError:
        raise PipelineError(f"{PARAMS} not found; run the stage from the repository root") from None
    return params.parse(text, source=str(PARAMS))


def load_data(path: Path, *, producer: str) -> dict:
    """The data file `path` (written by `producer`) with the tensors CONTENTS lists, checked (tensors.checked)."""
    return tensors.checked(io.load_tensors(path, producer=producer), CONTENTS[path], source=str(path),
                           producer=producer)


def load_split(path: Path, *, producer: str, keys: tuple[str, ...] | None = None) -> dict:
    """The checked data file (see `load_data`), its `keys` only if given, with the uint8 images (x_*) as float
    (N, 1, 28, 28) in [0, 1]; labels pass through."""
    t = load_data(path, producer=producer)
    return {k: tensors.to_float(t[k]) if k.startswith("x_") else t[k] for k in keys or t}


def read_checked_json(path: Path, *, producer: str, numbers: tuple[str, ...] = ()) -> dict:
    """A JSON object written by `producer` in which every dotted key of `numbers` (`tuned.accuracy`) is a number."""
    obj = io.read_json(path, producer=producer)
    for dotted in numbers:
        node = obj
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise PipelineError(f"{path} has no number at '{dotted}'; rerun `dvc repro {producer}`")
    return obj


def read_config(path: Path = BEST_CONFIG, *, producer: str = "select_cnn") -> dict:
    """The hyperparameters and recipe, flat (params.split_cnn splits them), of a configuration file: the tuned
    CNN's (select_cnn) or the search's best trial (SEARCH_CONFIG, tune_cnn)."""
    return params.tuned_hyperparameters(io.read_json(path, producer=producer), source=str(path), producer=producer)
