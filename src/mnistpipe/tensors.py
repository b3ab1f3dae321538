"""Tensor helpers that every stage needs, kept apart from the download code in `data.py`.

Each stage's dvc.yaml deps list the modules it loads: were these helpers in `data.py`, an edit to a mirror or a
checksum there would rerun every stage instead of `download` alone.
"""

from __future__ import annotations

import torch

from .errors import PipelineError


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]."""
    return x.unsqueeze(1).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float images in [0, 1] (N, 1, 28, 28) -> uint8 (N, 28, 28), rounded."""
    return x.squeeze(1).clamp(0, 1).mul(255.0).round_().to(torch.uint8)


def check_counts(images: dict, labels: dict, *, images_source: str, labels_source: str, producer: str) -> None:
    """Every `x_<part>` in `images` must have as many rows as `y_<part>` in `labels` (train, val, test...)."""
    for key, x in images.items():
        y = labels.get("y_" + key.removeprefix("x_"))
        if y is not None and len(x) != len(y):
            raise PipelineError(
                f"{images_source} has {len(x)} {key.removeprefix('x_')} images but {labels_source} has {len(y)} "
                f"labels; rerun `dvc repro {producer}`"
            )
