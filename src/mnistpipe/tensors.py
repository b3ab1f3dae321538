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


def checked(t: object, keys: tuple[str, ...], *, source: str, producer: str) -> dict[str, torch.Tensor]:
    """The tensors `keys` of a loaded data file, checked: images `x_*` uint8 (N, 28, 28), labels `y_*` int64 (N,),
    as many labels as images per part. A stale, foreign or edited file fails here with one line naming `source`
    and the stage to rerun (`producer`), not deep inside torch."""
    for key in keys:
        v = t.get(key) if isinstance(t, dict) else None
        image = key.startswith("x_")
        ok = isinstance(v, torch.Tensor) and (
            v.dtype == torch.uint8 and v.dim() == 3 and tuple(v.shape[1:]) == (28, 28) if image
            else v.dtype == torch.int64 and v.dim() == 1)
        if not ok:
            want = "uint8 images of shape (N, 28, 28)" if image else "int64 labels of shape (N,)"
            got = f"holds {v.dtype} of shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else "is missing"
            raise PipelineError(f"{source}: '{key}' should hold {want} but {got}; rerun `dvc repro {producer}`")
    out = {k: t[k] for k in keys}
    check_counts(out, out, images_source=source, labels_source=source, producer=producer)
    return out
