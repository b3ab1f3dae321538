"""Additive white Gaussian noise and the image-quality measures used to judge denoising."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import PipelineError


def add_awgn(x: torch.Tensor, *, std: float, generator: torch.Generator) -> torch.Tensor:
    """Return `x` (float in [0, 1]) plus N(0, std^2) noise, clipped to [0, 1]. Same generator state, same noise."""
    if std < 0:
        raise PipelineError(f"add_awgn.std={std} must be >= 0 (0.335 is the n-MNIST AWGN level)")
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    return (x + std * noise).clamp_(0.0, 1.0)


def psnr(pred: torch.Tensor, target: torch.Tensor, *, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB (peak `peak`), shape (N,). Identical images give +inf."""
    if pred.shape != target.shape:
        raise PipelineError(f"cannot compare images of shapes {tuple(pred.shape)} and {tuple(target.shape)}")
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(peak**2 / mse)


def mean_psnr(pred: torch.Tensor, target: torch.Tensor, *, batch: int = 4096) -> float:
    """PSNR averaged over images (per-image PSNR, then the mean), finite images only."""
    values = torch.cat([psnr(pred[i:i + batch], target[i:i + batch]) for i in range(0, len(pred), batch)])
    return float(values[torch.isfinite(values)].mean())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def mean_ssim(pred: torch.Tensor, target: torch.Tensor, *, batch: int = 4096) -> float:
    """SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, peak 1) averaged over images (N, 1, H, W)."""
    if pred.shape != target.shape:
        raise PipelineError(f"cannot compare images of shapes {tuple(pred.shape)} and {tuple(target.shape)}")
    w = _gaussian_window()
    c1, c2 = 0.01**2, 0.03**2
    total = 0.0
    for i in range(0, len(pred), batch):
        x, y = pred[i:i + batch].float(), target[i:i + batch].float()
        mx, my = F.conv2d(x, w), F.conv2d(y, w)
        sxx = F.conv2d(x * x, w) - mx**2
        syy = F.conv2d(y * y, w) - my**2
        sxy = F.conv2d(x * y, w) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        total += float(s.flatten(1).mean(1).sum())
    return total / len(pred)
