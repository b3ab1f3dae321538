"""Noise-robustness curve: test accuracy of each classifier (optionally behind the autoencoder) against noise std.

The noise is made as the pipeline makes its noisy set: AWGN, clipped to [0, 1], stored as 8-bit images. The
autoencoder's output is quantised to 8 bits too, as the denoise stage stores it, so every number here is measured
on the kind of images the rest of the pipeline sees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import noise, tensors, train
from .errors import PipelineError

# Keys of each row that are not a method's accuracy.
STD, NOISY_PSNR, DENOISED_PSNR = "std", "noisy_psnr_db", "denoised_psnr_db"


def noise_generator(seed: int, std: float) -> torch.Generator:
    """A generator for the noise of level `std`, from the base `seed`.

    The stream is keyed on the std's value (in millionths), not on its position in the list, so adding a level
    to the list leaves the noise, and the accuracy, of every other level unchanged.
    """
    state = np.random.SeedSequence([seed, round(std * 1_000_000)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def noisy_images(x: torch.Tensor, *, std: float, seed: int) -> torch.Tensor:
    """`x` (float in [0, 1], N x 1 x 28 x 28) with seeded AWGN of level `std`, clipped and quantised to 8 bits."""
    return tensors.to_float(tensors.to_uint8(noise.add_awgn(x, std=std, generator=noise_generator(seed, std))))


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose largest logit is the label (counted in integers: 0.12, not float32's 0.119999...)."""
    return int((logits.argmax(1) == y).sum()) / len(y)


def _finite_psnr(pred: torch.Tensor, target: torch.Tensor) -> float | None:
    """Mean PSNR over the images that differ from their target; None when none does (infinite PSNR)."""
    value = noise.mean_psnr(pred, target)
    return value if math.isfinite(value) else None


def robustness_curve(x: torch.Tensor, y: torch.Tensor, *, methods: Mapping[str, tuple[nn.Module, bool]],
                     dae: nn.Module | None, stds: Sequence[float], seed: int, batch_size: int = 256,
                     device: str | torch.device = "cpu") -> list[dict]:
    """Accuracy of every method on `x` (clean float images in [0, 1]) with labels `y`, at each noise std.

    `methods` maps a name to (classifier, denoise first): with True the noisy images go through `dae` (and are
    quantised to 8 bits) before the classifier sees them. Returns one row per std, in the given order:
    {"std", <method>: accuracy, ..., "noisy_psnr_db", "denoised_psnr_db"}; a PSNR is None when the images
    equal the clean ones (std 0 before denoising) and absent when no method denoises. Only one std's images
    are held at a time.
    """
    stds = [float(s) for s in stds]  # the params schema checks the levels
    if len(x) != len(y) or len(x) == 0:
        raise PipelineError(f"need as many labels as images, at least one: got {len(x)} images, {len(y)} labels")
    denoising = any(first for _, first in methods.values())
    if denoising and dae is None:
        raise PipelineError("a method denoises first but no autoencoder was given")
    rows = []
    for std in stds:
        noisy = noisy_images(x, std=std, seed=seed)
        row: dict = {STD: std}
        denoised = None
        if denoising:
            denoised = tensors.to_float(tensors.to_uint8(train.predict(dae, noisy, batch_size=batch_size,
                                                                       device=device)))
        for name, (classifier, first) in methods.items():
            images = denoised if first else noisy
            row[name] = accuracy(train.predict(classifier, images, batch_size=batch_size, device=device), y)
        row[NOISY_PSNR] = _finite_psnr(noisy, x)
        if denoised is not None:
            row[DENOISED_PSNR] = _finite_psnr(denoised, x)
        rows.append(row)
    return rows
