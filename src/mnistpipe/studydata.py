"""The training data of a tuning study: its fingerprint, and loading it back with that fingerprint checked.

The tune_cnn stage records the SHA-256 of `data/prepared/train.pt` in a shared study, and every worker that joins
the study (`mnistpipe-tune-worker`) loads the file through `load_training_data`, which refuses a file with another
checksum, so trials of other data never enter the study.
"""

from __future__ import annotations

import hashlib
import os

import torch

from . import io, tensors
from .errors import PipelineError


def data_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (the prepared tensor files are byte-identical for the same params)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_training_data(path: str | os.PathLike, *, sha256: str, study_name: str) -> dict[str, torch.Tensor]:
    """The train/val split the study was made with, as float images; another file is refused."""
    t = io.load_tensors(path, producer="download")
    if sha256 and data_fingerprint(path) != sha256:
        raise PipelineError(f"{path} is not the training data of study {study_name!r} (SHA-256 differs); check "
                            "out the commit that started the study and run `dvc pull` or `dvc repro download`, "
                            "or pass --data with the right file")
    t = tensors.checked(t, ("x_train", "y_train", "x_val", "y_val"), source=str(path), producer="download")
    return {k: tensors.to_float(v) if k.startswith("x_") else v for k, v in t.items()}
