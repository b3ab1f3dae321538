"""mnistpipe.robustness on real MNIST digits: the noise it adds, the accuracy it measures, and its bad input.

The classifier is a logistic regression trained here on 2,000 real test-file digits (a second, to stay
independent of the project's model code, which the stage smoke test covers with the real checkpoints); the
"autoencoder" is a fixed 3x3 mean filter, a denoiser whose effect is known.
"""

from __future__ import annotations

import copy
import io as _io
import math
from pathlib import Path

import pytest
import torch
import yaml
from matplotlib.figure import Figure
from torch import nn

from mnistpipe import noise, params, plots, robustness, tensors, train
from mnistpipe.errors import PipelineError

N_FIT, N_EVAL = 2000, 500
PARAMS_YAML = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def digits(t10k) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_fit, y_fit, x_eval, y_eval): float real digits in [0, 1], N x 1 x 28 x 28, and their labels."""
    x, y = t10k
    x = tensors.to_float(x[:N_FIT + N_EVAL])
    return x[:N_FIT], y[:N_FIT], x[N_FIT:], y[N_FIT:N_FIT + N_EVAL]


@pytest.fixture(scope="module")
def classifier(digits) -> nn.Module:
    """Logistic regression on the clean fit digits: about 85-90 % on the held-out ones."""
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        for i in range(0, len(x), 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def mean_filter() -> nn.Module:
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="replicate", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1 / 9)
    return conv.eval()


def curve(digits, classifier, dae=None, *, stds, seed=0, batch_size=2048, methods=None):
    _, _, x, y = digits
    methods = methods or {"plain": (classifier, False)}
    return robustness.robustness_curve(x, y, methods=methods, dae=dae, stds=stds, seed=seed,
                                       batch_size=batch_size, device="cpu")


def test_std_zero_is_the_plain_accuracy_on_the_same_images(digits, classifier):
    _, _, x, y = digits
    plain = robustness.accuracy(train.predict(classifier, x), y)
    assert 0.8 < plain < 1.0  # a real, imperfect classifier: equality below is not a 0 == 0 or 1 == 1
    [row] = curve(digits, classifier, stds=[0.0])
    assert row["plain"] == plain
    assert row["noisy_psnr_db"] is None  # 8-bit images plus no noise are the very same images: infinite PSNR
    assert torch.equal(robustness.noisy_images(x, std=0.0, seed=0), x)


def test_noise_is_awgn_clipped_and_stored_as_8_bit_like_add_awgn(digits):
    _, _, x, _ = digits
    got = robustness.noisy_images(x, std=0.3, seed=5)
    want = tensors.to_float(tensors.to_uint8(noise.add_awgn(x, std=0.3, generator=robustness.noise_generator(5, 0.3))))
    assert torch.equal(got, want)
    assert got.min() >= 0 and got.max() <= 1
    assert torch.equal(got * 255, (got * 255).round())  # exactly 256 levels, as the stored noisy set
    # On grey pixels, 4 sigma from either clip, the added noise has the requested std (8-bit rounding adds ~0.001).
    small = robustness.noisy_images(x, std=0.05, seed=5)
    grey = (x > 0.3) & (x < 0.7)
    assert int(grey.sum()) > 5000
    assert float((small - x)[grey].std()) == pytest.approx(0.05, rel=0.05)


def test_more_noise_lower_psnr_and_lower_accuracy(digits, classifier):
    stds = [0.0, 0.1, 0.2, 0.4, 0.8]
    rows = curve(digits, classifier, stds=stds)
    assert [r["std"] for r in rows] == stds
    psnr = [r["noisy_psnr_db"] for r in rows[1:]]
    assert all(a > b + 1.0 for a, b in zip(psnr[:-1], psnr[1:], strict=True)), psnr  # doubling the std costs about 6 dB
    acc = [r["plain"] for r in rows]
    assert acc[-1] < acc[0] - 0.1, acc


def test_same_seed_same_curve_other_seed_other_noise(digits, classifier):
    stds = [0.2, 0.6]
    first = curve(digits, classifier, stds=stds, seed=3)
    assert curve(digits, classifier, stds=stds, seed=3) == first
    other = curve(digits, classifier, stds=stds, seed=4)
    assert [r["noisy_psnr_db"] for r in other] != [r["noisy_psnr_db"] for r in first]
    _, _, x, _ = digits
    assert not torch.equal(robustness.noisy_images(x, std=0.2, seed=3), robustness.noisy_images(x, std=0.2, seed=4))


def test_each_std_has_its_own_stream_whatever_the_list(digits, classifier):
    _, _, x, _ = digits
    alone = curve(digits, classifier, stds=[0.4])[0]
    assert curve(digits, classifier, stds=[0.1, 0.4, 0.7])[1] == alone
    # Not one stream scaled: the noise of 0.2 and of 0.4 are different draws.
    n2 = noise.add_awgn(torch.zeros(64, 1, 28, 28), std=1.0, generator=robustness.noise_generator(0, 0.2))
    n4 = noise.add_awgn(torch.zeros(64, 1, 28, 28), std=1.0, generator=robustness.noise_generator(0, 0.4))
    assert not torch.equal(n2, n4)


def test_denoise_first_classifies_the_8_bit_denoised_images(digits, classifier, mean_filter):
    _, _, x, y = digits
    methods = {"plain": (classifier, False), "denoised": (classifier, True)}
    [row] = curve(digits, classifier, mean_filter, stds=[0.5], methods=methods)
    noisy = robustness.noisy_images(x, std=0.5, seed=0)
    denoised = tensors.to_float(tensors.to_uint8(train.predict(mean_filter, noisy)))
    assert row["denoised"] == robustness.accuracy(train.predict(classifier, denoised), y)
    assert row["plain"] == robustness.accuracy(train.predict(classifier, noisy), y)
    assert row["denoised"] != row["plain"]
    # A mean filter averages 9 pixels of independent noise: at std 0.5 that outweighs the blur (about +2.9 dB).
    assert row["denoised_psnr_db"] == pytest.approx(noise.mean_psnr(denoised, x))
    assert row["denoised_psnr_db"] > row["noisy_psnr_db"] + 2.0


def test_small_batches_give_the_same_curve(digits, classifier, mean_filter):
    methods = {"plain": (classifier, False), "denoised": (classifier, True)}
    big = curve(digits, classifier, mean_filter, stds=[0.3], methods=methods)
    small = curve(digits, classifier, mean_filter, stds=[0.3], methods=methods, batch_size=37)
    assert [r["plain"] for r in small] == [r["plain"] for r in big]
    assert [r["denoised"] for r in small] == [r["denoised"] for r in big]


@pytest.mark.parametrize("stds", [[], [0.1, -0.2], [0.1, math.nan], [0.1, math.inf]])
def test_bad_std_list_is_refused_by_the_params_schema(stds):
    """The stage hands the curve only levels the schema passed: empty, negative and non-finite lists stop there."""
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    raw["robustness"]["stds"] = stds
    with pytest.raises(PipelineError, match="robustness.stds") as exc:
        params.validate(raw)
    assert "\n" not in str(exc.value)


def test_mismatched_labels_and_missing_autoencoder(digits, classifier):
    _, _, x, y = digits
    with pytest.raises(PipelineError, match="500 images, 499 labels"):
        robustness.robustness_curve(x, y[:-1], methods={"plain": (classifier, False)}, dae=None, stds=[0.1], seed=0)
    with pytest.raises(PipelineError, match="no autoencoder"):
        robustness.robustness_curve(x, y, methods={"d": (classifier, True)}, dae=None, stds=[0.1], seed=0)


@pytest.mark.parametrize("stds, needle", [([], "at least 1 item"), ([0.0, -0.1], "greater than or equal to 0"),
                                          ([0.2, 0.2], "repeat"), (0.3, "valid list")])
def test_params_schema_refuses_a_bad_std_list(stds, needle):
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    good = params.validate(copy.deepcopy(raw)).robustness
    assert good.stds and all(s >= 0 for s in good.stds)
    raw["robustness"]["stds"] = stds
    with pytest.raises(PipelineError) as exc:
        params.validate(raw)
    msg = str(exc.value)
    assert "\n" not in msg and "robustness.stds" in msg and needle in msg, msg


def test_figure_has_one_line_per_method_and_the_training_level():
    rows = [{"std": s, "a": 1 - s, "b": 1 - s / 2} for s in (0.4, 0.0, 0.8)]  # unsorted on purpose
    fig = plots.robustness(rows, {"a": "method a", "b": "method b"}, train_std=0.335)
    assert isinstance(fig, Figure)
    fig.savefig(_io.BytesIO(), format="png", dpi=30)
    [ax] = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"method a", "method b", "training noise (std 0.335)"}
    assert list(lines["method a"].get_xdata()) == [0.0, 0.4, 0.8]
    assert list(lines["method a"].get_ydata()) == pytest.approx([100.0, 60.0, 20.0])
