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
CHECKPOINTS = {name: MODELS / f"{name}.pt"
               for name in ("baseline", "search_best", "tuned", "noisy", "dae", "denoised")}
# The stage that writes each checkpoint, for "run `dvc repro <stage>`" messages.
PRODUCERS = {"baseline": "train_baseline", "search_best": "tune_cnn", "tuned": "select_cnn",
             "noisy": "train_on_noisy", "dae": "train_dae", "denoised": "train_on_denoised"}
# The tensors of each data file: images x_* (uint8, N x 28 x 28) and labels y_* (int64, N), checked on every load.
CONTENTS = {TRAIN: ("x_train", "y_train", "x_val", "y_val"), TEST: ("x_test", "y_test"),
            NOISY_TRAIN: ("x_train", "x_val"), NOISY_TEST: ("x_test",),
            DENOISED_TRAIN: ("x_train", "x_val"), DENOISED_TEST: ("x_test",)}


def load_params() -> Params:
    """params.yaml, validated (all of it, so a typo anywhere fails every stage)."""
    return params.load(PARAMS)


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


def train_tuned_on(*, stage: str, images: Path, images_producer: str, checkpoint: str) -> None:
    """Stage `stage`: fine-tune the tuned CNN on other images (noisy or denoised: `images`, written by
    `images_producer`) with the clean labels, for the stage's own `epochs` at its own peak `lr` (the rest of the
    tuned training settings kept), and save it as CHECKPOINTS[`checkpoint`]."""
    # Imported here: only the two retraining stages train, and a module-level import would make every stage that
    # uses this file depend on (and rerun after edits to) train.py, models.py and tracking.py.
    from mnistpipe import models, tracking, train

    run = load_params()
    section = getattr(run, stage)
    _, training = params.split_cnn(read_config())
    training.update(epochs=section.epochs, lr=section.lr)
    labels = load_data(TRAIN, producer="download")
    x = load_split(images, producer=images_producer)
    tensors.check_counts(x, labels, images_source=str(images), labels_source=str(TRAIN), producer=images_producer)
    tuned = CHECKPOINTS["tuned"]
    model = models.from_checkpoint(io.load_checkpoint(tuned, kind="cnn", producer=PRODUCERS["tuned"]), path=str(tuned),
                                    seed=run.seed)
    with tracking.live_log(METRICS / stage) as live:
        result = train.train_cnn(model, x["x_train"], labels["y_train"], x["x_val"], labels["y_val"], **training,
                                 seed=run.seed, device=run.device, on_epoch=live.log_epoch, progress=True)
        live.summary.update(result.metrics)
        io.save_checkpoint(CHECKPOINTS[checkpoint], model, kind="cnn", stage=stage,
                           meta={"train_set": checkpoint, "dataset": run.dataset, **result.metrics})
