"""The MNIST-format datasets the pipeline can run on, by the name params.yaml's `dataset` takes, and their classes.

Only names and class names live here (the params schema and the stages that label reports and figures need them);
mirrors, file names and checksums are download-only and live in `data.py`, so that editing them reruns `download`
alone.
"""

from __future__ import annotations

from .errors import PipelineError

# Class names as torchvision's MNIST, FashionMNIST and KMNIST `classes` give them (KMNIST's in romanised hiragana).
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
}
NAMES = tuple(CLASS_NAMES)
DEFAULT = "mnist"


def class_names(dataset: str) -> list[str]:
    """The ten class names of `dataset` (one of `NAMES`), index = label."""
    try:
        return list(CLASS_NAMES[dataset])
    except KeyError:
        raise PipelineError(f"unknown dataset {dataset!r}; set `dataset` to one of {', '.join(NAMES)}") from None
