"""mnistpipe.train: the training loop on tiny data (CPU, one epoch, a few hundred 28x28 images)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from fitting import cnn_config, dae_config, fit_cnn, fit_dae

from mnistpipe import models, train
from mnistpipe.errors import PipelineError

N_TRAIN, N_VAL, BATCH = 320, 64, 64  # 5 steps per epoch
# Real MNIST for the learning test: training images from the start of the test file, held-out ones from its end.
LEARN_TRAIN, LEARN_HELD, LEARN_EPOCHS = 2000, 1000, 4
LEARN_CNN = cnn_config(kernel_size=3, stride=1, dropout=0.1, channels=(8, 16), hidden=32)
SMALL_CNN = cnn_config(kernel_size=3, stride=1, dropout=0.2, channels=(4, 8), hidden=16)
TINY_DAE = dae_config(width=2, skips=True)
FIT = dict(weight_decay=5e-4, device="cpu")


def digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic, learnable 'digits': class c lights a bar at row 4 + 2c, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.2
    for i, c in enumerate(y.tolist()):
        x[i, 0, 4 + 2 * c: 6 + 2 * c, 6:22] = 1.0
    return x, y


@pytest.fixture(scope="module")
def cnn_data():
    x, y = digits(N_TRAIN, 0)
    xv, yv = digits(N_VAL, 1)
    return x, y, xv, yv


@pytest.fixture(scope="module")
def baseline(cnn_data):
    """One CNN run with seed 0 (shared by the tests that only read it)."""
    return fit_cnn(*cnn_data, SMALL_CNN, lr=3e-3, epochs=1, batch_size=BATCH, seed=0, **FIT)


def test_train_cnn_history_and_metrics(baseline):
    model, result = baseline
    assert isinstance(model, models.CNN)
    assert len(result.history) == 1
    rec = result.history[0]
    assert {"epoch", "train_loss", "val_loss", "val_acc", "train_seconds"} <= set(rec)
    assert rec["epoch"] == 1
    assert math.isfinite(rec["train_loss"]) and math.isfinite(rec["val_loss"])
    assert 0.0 <= rec["val_acc"] <= 1.0
    assert rec["train_seconds"] > 0
    assert result.metrics == {**rec, "epochs": 1}
    assert all(p.device.type == "cpu" for p in model.parameters())


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def without_time(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "train_seconds"}


def test_same_seed_is_bit_identical(baseline, cnn_data):
    model_a, result_a = baseline
    model_b, result_b = fit_cnn(*cnn_data, SMALL_CNN, lr=3e-3, epochs=1, batch_size=BATCH, seed=0, **FIT)
    assert same_state(model_a, model_b)
    assert without_time(result_a.metrics) == without_time(result_b.metrics)
    # and the optimizer did step: parameters, not just BatchNorm's running statistics (which move in any
    # forward pass in training mode), left their seeded initialisation
    torch.manual_seed(0)
    init = models.CNN(SMALL_CNN)
    init_params = dict(init.named_parameters())
    assert all(not torch.equal(p, init_params[name]) for name, p in model_a.named_parameters())


def test_different_seed_differs(baseline, cnn_data):
    model_a, result_a = baseline
    model_c, result_c = fit_cnn(*cnn_data, SMALL_CNN, lr=3e-3, epochs=1, batch_size=BATCH, seed=1, **FIT)
    assert not same_state(model_a, model_c)
    assert result_a.metrics["train_loss"] != result_c.metrics["train_loss"]


def test_on_epoch_called_once_per_epoch(cnn_data):
    calls = []
    x, y, xv, yv = cnn_data
    model, result = fit_cnn(x[:192], y[:192], xv, yv, SMALL_CNN, lr=3e-3, epochs=2, batch_size=BATCH, seed=0,
                                    on_epoch=lambda e, rec: calls.append((e, dict(rec))), **FIT)
    assert [e for e, _ in calls] == [1, 2]
    assert [rec for _, rec in calls] == result.history
    assert result.metrics["epochs"] == 2
    assert result.history[1]["train_seconds"] >= result.history[0]["train_seconds"]


def test_validation_and_callbacks_stay_off_the_training_clock(cnn_data):
    """The benchmark scores the test set in `on_epoch`: that time, like validation's, is not training time."""
    slept = []

    def slow_callback(epoch, record):
        slept.append(record["train_seconds"])
        time.sleep(0.5)

    _, result = fit_cnn(*cnn_data, SMALL_CNN, lr=3e-3, epochs=2, batch_size=BATCH, seed=0, on_epoch=slow_callback,
                        **FIT)
    assert len(slept) == 2 and result.history[1]["train_seconds"] - slept[0] < 0.5, slept


def test_stopwatch_counts_only_while_running():
    clock = train.Stopwatch(torch.device("cpu"))
    clock.start()
    time.sleep(0.01)
    so_far = clock.stop()
    time.sleep(0.3)
    clock.start()
    time.sleep(0.01)
    total = clock.stop()
    assert 0.01 <= so_far < total < 0.3
    time.sleep(0.3)  # stopped: nothing counts until the next start
    clock.start()
    assert clock.stop() - total < 0.3


def test_progress_bar_stays_off_a_stderr_that_is_no_terminal(cnn_data, capfd):
    """Regression: the bar once wrote to a captured stderr (dvc, CI), around the stages' one-line errors."""
    fit_cnn(*cnn_data, SMALL_CNN, lr=3e-3, epochs=1, batch_size=BATCH, seed=0, progress=True, **FIT)
    assert capfd.readouterr().err == ""


def test_train_cnn_learns_real_digits(t10k):
    """A claim that can fail: on real MNIST, a small CNN must classify held-out digits well after a few epochs."""
    images, labels = t10k
    x = images.unsqueeze(1).float() / 255
    x_train, y_train, x_held, y_held = x[:LEARN_TRAIN], labels[:LEARN_TRAIN], x[-LEARN_HELD:], labels[-LEARN_HELD:]
    before = untrained_accuracy(x_held, y_held)
    model, result = fit_cnn(x_train, y_train, x_held, y_held, LEARN_CNN, lr=5e-3, epochs=LEARN_EPOCHS,
                                    batch_size=64, seed=0, device="cpu")
    acc = float((train.predict(model, x_held).argmax(1) == y_held).float().mean())
    assert acc == pytest.approx(result.metrics["val_acc"])
    assert before < 0.3 and acc > 0.9, f"held-out accuracy {acc:.3f} (untrained {before:.3f})"


def untrained_accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = models.CNN(LEARN_CNN)
    return float((train.predict(model, x).argmax(1) == y).float().mean())


def test_trained_weights_come_back_contiguous(baseline):
    # Training runs channels_last; saved checkpoints must not depend on that memory layout.
    model, _ = baseline
    assert all(p.is_contiguous() for p in model.state_dict().values())


def test_batch_larger_than_data(cnn_data):
    with pytest.raises(PipelineError, match=f"batch_size=400 is larger than the {N_TRAIN} training images"):
        fit_cnn(*cnn_data, SMALL_CNN, lr=3e-3, epochs=1, batch_size=400, seed=0, **FIT)


def test_divergence_is_a_user_error(cnn_data):
    with pytest.raises(PipelineError, match="diverged") as exc:
        fit_cnn(*cnn_data, SMALL_CNN, lr=1e6, epochs=1, batch_size=BATCH, seed=0, **FIT)
    assert "lr=1000000.0" in str(exc.value) and "lower lr" in str(exc.value)


@pytest.mark.parametrize("n, epochs", [(256, 1), (128, 2)])
def test_four_optimizer_steps(cnn_data, n, epochs):
    x, y, xv, yv = cnn_data
    _, result = fit_cnn(x[:n], y[:n], xv, yv, SMALL_CNN, lr=3e-3, epochs=epochs, batch_size=BATCH, seed=0,
                                **FIT)
    assert len(result.history) == epochs


def test_training_with_shift_augmentation(cnn_data, baseline):
    model, result = fit_cnn(*cnn_data, SMALL_CNN, lr=3e-3, epochs=1, batch_size=BATCH, seed=0, max_shift=2,
                                    **FIT)
    assert math.isfinite(result.metrics["train_loss"])
    assert not same_state(model, baseline[0])  # the augmentation changed what was trained on


# ---------------------------------------------------------------- random_shift


def centred_digits(n: int = 16) -> torch.Tensor:
    """Random blobs inside rows/cols 8-19: a margin of 8 pixels, so shifts of up to 3 lose nothing."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 8:20, 8:20] = torch.rand(n, 1, 12, 12, generator=g) + 0.1
    return x


def test_random_shift_zero_is_identity():
    x = centred_digits()
    assert train.random_shift(x, 0, torch.Generator().manual_seed(0)) is x


def test_random_shift_translates_and_keeps_pixels():
    x = centred_digits(32)
    out = train.random_shift(x, 3, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # nothing pushed off the edge
    offsets = set()
    for i in range(len(x)):
        match = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.equal(out[i], torch.roll(x[i], (dy, dx), dims=(1, 2)))]
        assert len(match) == 1, i  # every output is exactly one translation of its input
        offsets.add(match[0])
    assert len(offsets) > 5  # shifts vary from image to image
    assert any(o != (0, 0) for o in offsets)


def test_random_shift_is_seeded():
    x = centred_digits()
    a = train.random_shift(x, 2, torch.Generator().manual_seed(5))
    b = train.random_shift(x, 2, torch.Generator().manual_seed(5))
    c = train.random_shift(x, 2, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_shift_zero_fills():
    x = torch.ones(8, 1, 28, 28)
    out = train.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert float(out.sum()) < float(x.sum())  # pixels shifted out are replaced by zeros, not wrapped
    assert set(out.unique().tolist()) <= {0.0, 1.0}


# ---------------------------------------------------------------- DAE and devices


def test_train_dae_tiny():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(192, 1, 28, 28, generator=g)
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    calls = []
    model, result = fit_dae(noisy[:160], clean[:160], noisy[160:], clean[160:], TINY_DAE,
                                    lr=3e-3, epochs=1, batch_size=32, seed=0, device="cpu",
                                    on_epoch=lambda e, rec: calls.append(e))
    assert isinstance(model, models.DAE)
    assert calls == [1]
    rec = result.history[0]
    assert {"train_loss", "val_loss", "val_psnr", "train_seconds"} <= set(rec)
    assert math.isfinite(rec["val_psnr"]) and 5.0 < rec["val_psnr"] < 60.0
    assert result.metrics["epochs"] == 1


def test_train_dae_shape_mismatch():
    a, b = torch.zeros(8, 1, 28, 28), torch.zeros(7, 1, 28, 28)
    with pytest.raises(PipelineError, match="differ in shape") as exc:
        fit_dae(a, b, a, a, TINY_DAE, lr=1e-3, epochs=1, batch_size=4, seed=0, device="cpu")
    assert "dvc repro add_awgn" in str(exc.value)
    with pytest.raises(PipelineError, match="differ in shape"):
        fit_dae(a, a, a, b, TINY_DAE, lr=1e-3, epochs=1, batch_size=4, seed=0, device="cpu")


def test_resolve_device(monkeypatch):
    assert train.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(PipelineError, match="no CUDA GPU"):
        train.resolve_device("cuda")


def test_predict_batches_match_one_pass(baseline, cnn_data):
    model = baseline[0]
    x = cnn_data[2]
    full = train.predict(model, x, batch_size=len(x))
    parts = train.predict(model, x, batch_size=7)
    assert full.shape == (N_VAL, 10) and full.dtype == torch.float32
    assert torch.allclose(full, parts, atol=1e-5)


def test_predict_runs_channels_last_and_leaves_the_model_as_it_was(baseline, cnn_data):
    """predict converts to NHWC for speed; the model's weights come back contiguous (a checkpoint saved after it
    has the same bytes), and the outputs equal a plain NCHW forward pass."""
    model = baseline[0]
    x = cnn_data[2]
    out = train.predict(model, x, batch_size=5)
    assert all(p.is_contiguous() for p in model.state_dict().values())
    with torch.no_grad():
        plain = model.eval()(x)
    assert torch.allclose(out, plain, atol=1e-5)


def test_bf16_autocast_path_on_cpu(cnn_data, monkeypatch):
    """The GPU's mixed-precision path, run on the CPU: shapes, dtypes and a finite loss."""
    monkeypatch.setattr(train, "BF16_DEVICES", ("cuda", "cpu"))
    x, y, xv, yv = cnn_data
    model, result = fit_cnn(x, y, xv, yv, SMALL_CNN, lr=3e-3, epochs=1, batch_size=BATCH, seed=0, **FIT)
    assert math.isfinite(result.metrics["train_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters()), "autocast keeps float32 master weights"
    out = train.predict(model, xv, device="cpu")
    assert out.shape == (N_VAL, 10) and out.dtype == torch.float32
    dae, res = fit_dae(x[:128], x[:128], xv[:32], xv[:32], TINY_DAE, lr=3e-3, epochs=1,
                               batch_size=32, seed=0, device="cpu")
    assert train.predict(dae, xv[:32]).shape == (32, 1, 28, 28) and math.isfinite(res.metrics["val_psnr"])


# ---------------------------------------------------------------- the optimiser hook


def test_explicit_default_optimizer_gives_bit_identical_weights(baseline, cnn_data):
    """train_module with `one_cycle_adamw` passed explicitly trains exactly what train_cnn's default path does."""
    torch.manual_seed(0)
    model = models.CNN(SMALL_CNN)
    result = train.train_module(model, *cnn_data, loss_fn=torch.nn.functional.cross_entropy,
                                optimizer=train.one_cycle_adamw(lr=3e-3, weight_decay=5e-4), epochs=1,
                                batch_size=BATCH, seed=0, device="cpu")
    assert same_state(model, baseline[0])
    assert without_time(result.metrics) == without_time(baseline[1].metrics)


def test_per_epoch_scheduler_steps_once_per_epoch(cnn_data):
    made = []

    def sgd_halving(params, steps, epochs):
        opt = torch.optim.SGD(params, lr=0.1)
        made.append((opt, steps, epochs))
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5), True

    x, y, xv, yv = cnn_data
    torch.manual_seed(0)
    result = train.train_module(models.CNN(SMALL_CNN), x, y, xv, yv, loss_fn=torch.nn.functional.cross_entropy,
                                optimizer=sgd_halving, epochs=3, batch_size=BATCH, seed=0, device="cpu")
    (opt, steps, epochs), = made
    assert (steps, epochs) == (N_TRAIN // BATCH, 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3), "three epochs, three steps of the schedule"
    assert [r["epoch"] for r in result.history] == [1, 2, 3] and 0.0 <= result.metrics["val_acc"] <= 1.0


def test_divergence_with_a_given_optimizer_names_its_rate(cnn_data):
    def huge(params, steps, epochs):
        opt = torch.optim.SGD(params, lr=1e8)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0), True

    torch.manual_seed(0)
    with pytest.raises(PipelineError, match=r"diverged .* with lr=100000000.0; lower lr"):
        train.train_module(models.CNN(SMALL_CNN), *cnn_data, loss_fn=torch.nn.functional.cross_entropy,
                           optimizer=huge, epochs=1, batch_size=BATCH, seed=0, device="cpu")
