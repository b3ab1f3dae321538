"""One training loop for both models: in-memory tensors, batches by index, one-cycle schedule, seeded.

`train_cnn` and `train_dae` take the model to train (built by the caller, with its seed, from its config) and
every training setting as a keyword argument, so a stage calls them with its params and the tuner calls the very
same functions with a trial's values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .errors import PipelineError
from .noise import mean_psnr

EpochCallback = Callable[[int, dict], None]
DIVERGED_LOSS = 1e4  # cross-entropy starts near 2.3 and MSE of [0, 1] images is at most 1
# bf16 autocast pays on GPUs (tensor cores); on CPUs without native bf16 it is slower and breaks bit-exact reruns.
BF16_DEVICES = ("cuda",)


@dataclass
class FitResult:
    """Per-epoch history (train_loss, val_loss, val metric, seconds) and the final metrics."""

    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


class Stopwatch:
    """Training seconds on `device`: the loop starts and stops it around each epoch's steps, so validation and
    callbacks do not count as training."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self._since = 0.0

    def start(self) -> None:
        """Start (or resume) counting."""
        self._since = time.perf_counter()

    def stop(self) -> float:
        """Stop counting, once the GPU (if any) has finished its queued work; returns the seconds so far."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - self._since
        return self.seconds

# (parameters, steps per epoch, epochs) -> (optimizer, scheduler, per_epoch): the scheduler steps once per epoch
# when per_epoch is true (StepLR), else after every optimizer step (OneCycleLR).
OptimizerFactory = Callable[[Iterable[nn.Parameter], int, int], tuple[torch.optim.Optimizer, Any, bool]]


def one_cycle_adamw(*, lr: float, weight_decay: float) -> OptimizerFactory:
    """The project's optimiser: AdamW under a one-cycle schedule peaking at `lr` over the whole run."""
    def make(params: Iterable[nn.Parameter], steps: int, epochs: int):
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        total_steps = epochs * steps
        # OneCycleLR divides by zero when the warm-up ends on step 1 (exactly 4 steps at 25 %): nudge it off.
        pct = 0.25 if 0.25 * total_steps != 1 else 0.3
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=pct), False
    return make


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' means CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device=cuda but no CUDA GPU is visible; use device: auto or cpu")
    return torch.device(device)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels in x and y (zero fill), vectorised per shift value."""
    if max_shift <= 0:
        return x
    n, s = len(x), max_shift
    shifts = torch.randint(0, 2 * s + 1, (2, n), generator=generator)
    padded = F.pad(x, (s, s, s, s))
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    code = (shifts[0] * (2 * s + 1) + shifts[1]).to(x.device)
    for k in torch.unique(code).tolist():
        idx = (code == k).nonzero(as_tuple=True)[0]
        dy, dx = divmod(k, 2 * s + 1)
        out[idx] = padded[idx, :, dy:dy + h, dx:dx + w]
    return out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256, device: str | torch.device = "cpu"):
    """Model outputs for `x` in eval mode, in batches, returned on the CPU as float32.

    Speed, not results: the batch is small because on CPUs 256 images stay in cache (1.4-2x faster than 2,048 for
    both networks on a 2-core EPYC), and the batches run in channels_last (NHWC), as training does, which about
    halved the autoencoder's time there. The model is left in the memory format it came in.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    # A 1-channel kernel is contiguous in both formats, so "was NCHW" means: every 4-d weight is contiguous.
    was_nchw = all(p.is_contiguous() for p in model.parameters() if p.dim() == 4)
    model.eval().to(device, memory_format=torch.channels_last)
    outs = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            outs.append(model(xb).float().cpu())
    if was_nchw:
        model.to(memory_format=torch.contiguous_format)
    return torch.cat(outs).contiguous() if outs else torch.empty(0)


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn, validate, epochs: int, lr: float | None,
         batch_size: int, seed: int, weight_decay: float, max_shift: int, device: torch.device,
         on_epoch: EpochCallback | None, progress: bool, desc: str,
         optimizer: OptimizerFactory | None = None) -> FitResult:
    """Train `model` in place; `optimizer` None is AdamW + one-cycle at `lr` (`one_cycle_adamw`).

    The clock runs only over each epoch's steps: `validate` and `on_epoch` run after it stopped, so whatever
    they compute (a benchmark's test accuracy) costs no training time.
    """
    if batch_size > len(x):
        raise PipelineError(f"batch_size={batch_size} is larger than the {len(x)} training images; lower batch_size")
    gen = torch.Generator().manual_seed(seed)
    # channels_last (NHWC): oneDNN's CPU convolutions, like cuDNN's, are faster in it than in NCHW.
    model.to(device, memory_format=torch.channels_last)
    x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
    steps = len(x) // batch_size  # drop the ragged last batch: every step has the same size
    make = optimizer or one_cycle_adamw(lr=lr, weight_decay=weight_decay)
    opt, sched, per_epoch = make(model.parameters(), steps, epochs)
    if lr is None:  # for the divergence message: a given optimizer's starting rate
        lr = opt.param_groups[0].get("initial_lr", opt.param_groups[0]["lr"])
    result, clock = FitResult(), Stopwatch(device)
    # disable=None: a bar only on a terminal; in logs (dvc, CI, the queue) it would garble the one-line errors.
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=None if progress else True, leave=False)
    for epoch in bar:
        model.train()
        clock.start()
        order = torch.randperm(len(x), generator=gen).to(device)
        total = torch.zeros((), device=device)
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            xb = random_shift(x[idx], max_shift, gen) if max_shift else x[idx]
            with _autocast(device):
                loss = loss_fn(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not per_epoch:
                sched.step()
            total += loss.detach()
        if per_epoch:
            sched.step()
        train_seconds = clock.stop()
        train_loss = float(total) / max(steps, 1)
        # A finite but astronomically large loss (lr=1000 with BatchNorm) is divergence too.
        if not math.isfinite(train_loss) or train_loss > DIVERGED_LOSS:
            raise PipelineError(
                f"{desc}: training diverged (loss is {train_loss} in epoch {epoch}) with lr={lr}; lower lr"
            )
        record = {"epoch": epoch, "train_loss": train_loss, **validate(model), "train_seconds": train_seconds}
        result.history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k.startswith("val")})
        if on_epoch is not None:
            on_epoch(epoch, record)
    result.metrics = {**result.history[-1], "epochs": epochs}
    model.to("cpu", memory_format=torch.contiguous_format)
    return result


def _autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type in BF16_DEVICES)


def train_cnn(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
              y_val: torch.Tensor, *, lr: float, epochs: int, batch_size: int, seed: int, weight_decay: float,
              label_smoothing: float, max_shift: int, device: str = "auto",
              on_epoch: EpochCallback | None = None, progress: bool = False) -> FitResult:
    """Train the classifier `model` (models.CNN) in place on float images (N, 1, 28, 28) in [0, 1].

    `seed` orders the batches and draws the shifts; the initial weights and the dropout masks come from torch's
    global generator, which `models.CNN(config, seed=...)` seeds. Validation loss and accuracy are computed after
    every epoch; the model ends on the CPU. Returns the `FitResult`, whose metrics hold val_acc, val_loss,
    train_loss and train_seconds.
    """
    dev = resolve_device(device)

    def validate(m: nn.Module) -> dict:
        logits = predict(m, x_val, device=dev)
        return {"val_loss": float(F.cross_entropy(logits, y_val)),
                "val_acc": float((logits.argmax(1) == y_val).float().mean())}

    def loss_fn(out, target):
        return F.cross_entropy(out, target, label_smoothing=label_smoothing)

    return _fit(model, x_train, y_train, loss_fn=loss_fn, validate=validate, epochs=epochs, lr=lr,
                batch_size=batch_size, seed=seed, weight_decay=weight_decay, max_shift=max_shift,
                device=dev, on_epoch=on_epoch, progress=progress, desc="cnn")


def train_dae(model: nn.Module, noisy_train: torch.Tensor, clean_train: torch.Tensor, noisy_val: torch.Tensor,
              clean_val: torch.Tensor, *, lr: float, epochs: int, batch_size: int, seed: int, weight_decay: float,
              device: str = "auto", on_epoch: EpochCallback | None = None, progress: bool = False) -> FitResult:
    """Train the denoising autoencoder `model` (models.DAE) in place, noisy -> clean with an MSE loss; val PSNR
    (dB) per epoch. `seed` orders the batches; the model ends on the CPU."""
    if noisy_train.shape != clean_train.shape or noisy_val.shape != clean_val.shape:
        raise PipelineError(
            f"noisy and clean images differ in shape ({tuple(noisy_train.shape)} vs {tuple(clean_train.shape)}); "
            "rerun `dvc repro add_awgn`"
        )
    dev = resolve_device(device)

    def validate(m: nn.Module) -> dict:
        out = predict(m, noisy_val, device=dev)
        return {"val_loss": float(F.mse_loss(out, clean_val)), "val_psnr": mean_psnr(out, clean_val)}

    return _fit(model, noisy_train, clean_train, loss_fn=F.mse_loss, validate=validate, epochs=epochs, lr=lr,
                batch_size=batch_size, seed=seed, weight_decay=weight_decay, max_shift=0, device=dev,
                on_epoch=on_epoch, progress=progress, desc="dae")


def train_module(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, *, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 optimizer: OptimizerFactory, epochs: int, batch_size: int, seed: int, device: str = "auto",
                 on_epoch: EpochCallback | None = None) -> FitResult:
    """Train any classifier `model` in place with this project's loop and a given loss and optimiser.

    `loss_fn(outputs, labels)` is also the validation loss (F.nll_loss for a model ending in log_softmax);
    val_acc is the argmax accuracy. `seed` orders the batches; seed torch's global generator before building
    `model` for a reproducible initialisation and dropout. Returns the `FitResult`; the model ends on the CPU.
    """
    dev = resolve_device(device)

    def validate(m: nn.Module) -> dict:
        out = predict(m, x_val, device=dev)
        return {"val_loss": float(loss_fn(out, y_val)), "val_acc": float((out.argmax(1) == y_val).float().mean())}

    return _fit(model, x_train, y_train, loss_fn=loss_fn, validate=validate, epochs=epochs, lr=None,
                batch_size=batch_size, seed=seed, weight_decay=0.0, max_shift=0, device=dev, on_epoch=on_epoch,
                progress=False, desc="model", optimizer=optimizer)
