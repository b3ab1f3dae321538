"""Side-by-side benchmark: a pytorch/examples-style reference trainer vs this project's trainer.

    python -m mnistpipe.bench --mnist DIR [--device auto] [--ref-epochs 6] [--epochs 2] [--json out.json]

Imports neither dvc, dvclive nor optuna, so it runs on a bare GPU machine with torch, torchvision, numpy and
scikit-learn. Both trainers are probed on the 10,000 test images `--checks` times per epoch with the clock
stopped (`train.Stopwatch.paused`); "time to X%" is the training time at the first probe whose test accuracy
reaches X.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from . import data, noise, tensors, train
from .architecture import CNNConfig, DAEConfig
from .plots import tsne_embed

TARGETS = (0.990, 0.992, 0.994)
# pytorch/examples normalises MNIST with the training set's pixel mean and standard deviation.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
NMNIST_STD = 0.335  # n-MNIST's AWGN level, as add_awgn.std in params.yaml
Probe = Callable[[nn.Module, float], None]  # (model, training seconds so far)


class ReferenceNet(nn.Module):
    """The network of pytorch/examples mnist/main.py."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(torch.flatten(x, 1))
        x = F.relu(self.fc1(x))
        x = self.fc2(self.dropout2(x))
        return F.log_softmax(x, dim=1)


class _PILDataset(torch.utils.data.Dataset):
    """Per-sample PIL conversion and ToTensor/Normalize transforms, as torchvision.datasets.MNIST does."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.tf(Image.fromarray(self.x[i].numpy(), mode="L")), int(self.y[i])


def _first_time(history: list[dict], target: float) -> float | None:
    return next((h["train_seconds"] for h in history if h["test_acc"] >= target), None)


def _probe(history: list[dict], x_test: torch.Tensor, y_test: torch.Tensor, device) -> Probe:
    """A probe that appends the test accuracy at the given training time to `history`."""
    def check(model: nn.Module, seconds: float) -> None:
        acc = float((train.predict(model, x_test, device=device).argmax(1) == y_test).float().mean())
        history.append({"test_acc": acc, "train_seconds": seconds})
    return check


def every_kth(probe: Probe, *, steps_per_epoch: int, checks_per_epoch: int) -> train.StepCallback:
    """A step callback that runs `probe` after each `checks_per_epoch`-th of an epoch (the last one at its end),
    with the training clock paused."""
    due = {round(steps_per_epoch * (k + 1) / checks_per_epoch) for k in range(checks_per_epoch)}

    def on_step(model: nn.Module, step: int, clock: train.Stopwatch) -> None:
        if step in due:
            with clock.paused() as seconds:
                probe(model, seconds)
    return on_step


def _summary(history: list[dict], images: int) -> dict:
    return {"images_per_s": images / history[-1]["train_seconds"], "history": history,
            **{f"time_to_{t:.3f}": _first_time(history, t) for t in TARGETS}}


def run_reference(x, y, x_test, y_test, *, epochs: int, device: torch.device, checks_per_epoch: int = 4,
                  seed: int = 1) -> dict:
    """pytorch/examples mnist: DataLoader + per-sample transforms, Adadelta(lr=1), StepLR(0.7), batch 64."""
    torch.manual_seed(seed)
    model = ReferenceNet().to(device)
    loader = torch.utils.data.DataLoader(_PILDataset(x, y), batch_size=64, shuffle=True)
    history: list[dict] = []
    x_probe = (tensors.to_float(x_test) - MNIST_MEAN) / MNIST_STD
    on_step = every_kth(_probe(history, x_probe, y_test, device), steps_per_epoch=len(loader),
                        checks_per_epoch=checks_per_epoch)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    clock = train.Stopwatch(device)
    for _ in range(epochs):
        model.train()
        clock.start()
        for step, (xb, yb) in enumerate(loader, 1):
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            F.nll_loss(model(xb), yb).backward()
            opt.step()
            on_step(model, step, clock)
            model.train()
        clock.stop()
        sched.step()
    return _summary(history, len(x) * epochs)


def run_project(x, y, x_test, y_test, *, config: CNNConfig, hp: dict, device: str,
                checks_per_epoch: int = 4) -> dict:
    """This project's `train_cnn` with `config` and `hp`, test accuracy probed `checks_per_epoch` times per epoch."""
    xf, xt = tensors.to_float(x), tensors.to_float(x_test)
    history: list[dict] = []
    on_step = every_kth(_probe(history, xt, y_test, train.resolve_device(device)),
                        steps_per_epoch=len(x) // hp["batch_size"], checks_per_epoch=checks_per_epoch)
    train.train_cnn(xf, y, xt[:1000], y_test[:1000], config, **hp, device=device, on_step=on_step)
    return _summary(history, len(x) * hp["epochs"])


def run_dae(x, *, config: DAEConfig, hp: dict, n: int, device: str, std: float = NMNIST_STD) -> dict:
    """Denoising-autoencoder training throughput over one epoch of `n` images."""
    clean = tensors.to_float(x[:n])
    noisy = noise.add_awgn(clean, std=std, generator=torch.Generator().manual_seed(0))
    _, result = train.train_dae(noisy, clean, noisy[:1000], clean[:1000], config, **{**hp, "epochs": 1},
                                device=device)
    return {"images_per_s": n / result.metrics["train_seconds"], "val_psnr_after_1_epoch": result.metrics["val_psnr"]}


def run_tsne(x_test, *, n: int, seed: int = 0) -> dict:
    """Seconds for a 2-D t-SNE of `n` test images."""
    t0 = time.perf_counter()
    tsne_embed(tensors.to_float(x_test[:n]).flatten(1).numpy(), perplexity=30.0, seed=seed)
    return {"n": n, "seconds": time.perf_counter() - t0}


# The speed recipe: the pipeline's CNN trained with a short one-cycle schedule; no dropout or shifts in 2 epochs.
DEFAULT_CNN = CNNConfig(dropout=0.0)
DEFAULT_HP = dict(lr=0.008, epochs=2, batch_size=256, seed=0, weight_decay=5e-4, label_smoothing=0.1, max_shift=0)
DEFAULT_DAE, DEFAULT_DAE_HP = DAEConfig(width=8, skips=True), dict(lr=0.003, batch_size=64, seed=0)


def _glibc() -> bool:
    """Whether this process runs on glibc (most Linux distributions), the one C library with malloc_trim."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name (macOS, musl)
        return False


def _fresh_heap() -> None:
    """Return freed memory to the OS before each part, so no part runs on the heap another part fragmented.

    The reference's per-sample allocations can leave the heap fragmented enough to slow the parts after it
    measurably (training, autoencoder and t-SNE alike); glibc's malloc_trim undoes that. Elsewhere the C
    library has no such call, and the parts run on the heap as it is.
    """
    gc.collect()
    if _glibc():
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table and optionally write JSON; returns the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", default="../shared/datasets/mnist", help="directory or URL with the MNIST .gz files")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ref-epochs", type=int, default=6, help="budget of the reference trainer, in epochs")
    ap.add_argument("--epochs", type=int, default=DEFAULT_HP["epochs"], help="epochs of the project trainer")
    ap.add_argument("--checks", type=int, default=4, help="test-accuracy probes per epoch, for both trainers")
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--dae-size", type=int, default=10000)
    ap.add_argument("--tsne-size", type=int, default=10000)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: reference,project,dae,tsne")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    dev = train.resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        raw = data.download([args.mnist], tmp)
    x, y = data.load_pair(raw["train_images"], raw["train_labels"], name="train")
    x_test, y_test = data.load_pair(raw["test_images"], raw["test_labels"], name="test")
    x, y = x[: args.train_size], y[: args.train_size]
    out = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else _cpu_name(),
           "threads": torch.get_num_threads(), "torch": torch.__version__, "train_size": len(x)}
    _fresh_heap()
    if "reference" not in skip:
        out["reference"] = run_reference(x, y, x_test, y_test, epochs=args.ref_epochs, device=dev,
                                         checks_per_epoch=args.checks)
    _fresh_heap()
    if "project" not in skip:
        out["project"] = run_project(x, y, x_test, y_test, config=DEFAULT_CNN, hp={**DEFAULT_HP, "epochs": args.epochs},
                                     device=args.device, checks_per_epoch=args.checks)
    _fresh_heap()
    if "dae" not in skip:
        out["dae"] = run_dae(x, config=DEFAULT_DAE, hp=DEFAULT_DAE_HP, n=args.dae_size, device=args.device)
    _fresh_heap()
    if "tsne" not in skip:
        out["tsne"] = run_tsne(x_test, n=args.tsne_size)
    print(format_table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


def format_table(out: dict) -> str:
    """A plain-text table of the results with the project/reference ratios."""
    ref, proj = out.get("reference"), out.get("project")
    rows = [f"device: {out['device']}  threads: {out['threads']}  torch: {out['torch']}  "
            f"train images: {out['train_size']}",
            f"{'measure':<34}{'reference':>14}{'project':>14}{'ratio':>10}"]

    def row(name, r, p, higher_better=True):
        def fmt(v):
            return "-" if v is None else f"{v:,.1f}"
        ratio = "-"
        if r is not None and p is not None and p > 0 and r > 0:
            ratio = f"{(p / r if higher_better else r / p):.1f}x"
        elif r is None and p is not None and ref:
            # The reference never reached the target: its whole budget is a lower bound.
            ratio = f">{ref['history'][-1]['train_seconds'] / p:.1f}x"
        rows.append(f"{name:<34}{fmt(r):>14}{fmt(p):>14}{ratio:>10}")

    if ref or proj:
        row("training images/s", ref and ref["images_per_s"], proj and proj["images_per_s"])
        for t in TARGETS:
            key = f"time_to_{t:.3f}"
            row(f"seconds to {100 * t:.1f}% test acc", ref and ref[key], proj and proj[key], higher_better=False)
        row("final test accuracy (%)", ref and 100 * ref["history"][-1]["test_acc"],
            proj and 100 * proj["history"][-1]["test_acc"])
    if "dae" in out:
        rows.append(f"{'autoencoder training images/s':<34}{'':>14}{out['dae']['images_per_s']:>14,.1f}")
    if "tsne" in out:
        label = f"t-SNE of {out['tsne']['n']} images (s)"
        rows.append(f"{label:<34}{'':>14}{out['tsne']['seconds']:>14,.1f}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
