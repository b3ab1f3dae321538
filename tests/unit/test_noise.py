"""mnistpipe.noise: additive white Gaussian noise, PSNR and SSIM."""

from __future__ import annotations

import math

import pytest
import torch

from mnistpipe import noise
from mnistpipe.errors import PipelineError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("std", [0.05, 0.1])
def test_awgn_has_the_requested_std(std):
    clean = torch.full((64, 1, 28, 28), 0.5)  # mid grey: with std <= 0.1 clipping (5 sigma away) never happens
    noisy = noise.add_awgn(clean, std=std, generator=gen(0))
    diff = noisy - clean
    assert noisy.shape == clean.shape and noisy.dtype == torch.float32
    assert float(diff.std()) == pytest.approx(std, rel=0.03)  # 50k samples: the std estimate is within ~1%
    assert abs(float(diff.mean())) < 5 * std / math.sqrt(diff.numel())  # zero mean, within 5 sigma
    assert not torch.equal(noisy, clean)


def test_awgn_zero_std_is_identity():
    clean = torch.rand(4, 1, 28, 28, generator=gen(1))
    assert torch.equal(noise.add_awgn(clean, std=0.0, generator=gen(0)), clean)


def test_awgn_output_is_clipped():
    clean = torch.rand(16, 1, 28, 28, generator=gen(1))
    noisy = noise.add_awgn(clean, std=0.8, generator=gen(0))
    assert float(noisy.min()) == 0.0 and float(noisy.max()) == 1.0  # heavy noise hits both bounds
    assert ((noisy >= 0) & (noisy <= 1)).all()
    assert torch.equal(clean, torch.rand(16, 1, 28, 28, generator=gen(1)))  # the input is not modified


def test_awgn_is_seeded():
    clean = torch.full((8, 1, 28, 28), 0.5)
    a = noise.add_awgn(clean, std=0.335, generator=gen(7))
    b = noise.add_awgn(clean, std=0.335, generator=gen(7))
    c = noise.add_awgn(clean, std=0.335, generator=gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float((a - c).abs().mean()) > 0.1


def test_awgn_negative_std():
    with pytest.raises(PipelineError, match=r"add_awgn.std=-0.1 must be >= 0"):
        noise.add_awgn(torch.zeros(1, 1, 28, 28), std=-0.1, generator=gen(0))


def test_psnr_known_value():
    target = torch.full((3, 1, 28, 28), 0.25)
    pred = target + 0.1  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    values = noise.psnr(pred, target)
    assert values.shape == (3,)
    assert values.tolist() == pytest.approx([20.0] * 3, abs=1e-4)
    assert float(noise.psnr(target + 0.01, target)[0]) == pytest.approx(40.0, abs=1e-3)
    assert float(noise.psnr(pred * 255, target * 255, peak=255.0)[0]) == pytest.approx(20.0, abs=1e-3)


def test_psnr_identical_is_inf():
    x = torch.rand(2, 1, 28, 28, generator=gen(0))
    assert torch.isinf(noise.psnr(x, x)).all()


def test_mean_psnr_averages_per_image_and_skips_inf():
    target = torch.full((3, 1, 28, 28), 0.5)
    pred = target.clone()
    pred[0] += 0.1    # 20 dB
    pred[1] += 0.01   # 40 dB
    # pred[2] is exact: +inf, left out of the mean
    assert noise.mean_psnr(pred, target) == pytest.approx(30.0, abs=1e-3)
    assert noise.mean_psnr(pred, target, batch=1) == pytest.approx(30.0, abs=1e-3)


def test_mean_ssim():
    clean = torch.rand(6, 1, 28, 28, generator=gen(0))
    assert noise.mean_ssim(clean, clean) == pytest.approx(1.0, abs=1e-5)
    noisy = noise.add_awgn(clean, std=0.2, generator=gen(1))
    s = noise.mean_ssim(noisy, clean)
    assert 0.0 < s < 0.95
    worse = noise.add_awgn(clean, std=0.5, generator=gen(1))
    assert noise.mean_ssim(worse, clean) < s
    assert noise.mean_ssim(noisy, clean, batch=4) == pytest.approx(s, abs=1e-6)


@pytest.mark.parametrize("fn", [noise.psnr, noise.mean_psnr, noise.mean_ssim])
def test_shape_mismatch(fn):
    with pytest.raises(PipelineError, match=r"shapes \(2, 1, 28, 28\) and \(2, 1, 27, 28\)"):
        fn(torch.zeros(2, 1, 28, 28), torch.zeros(2, 1, 27, 28))
