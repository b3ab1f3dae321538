"""The benchmark's parts, each run in a process of its own by `mnistpipe.lab.bench`:

    python -m mnistpipe.lab.bench_parts {reference,refloop,project} [--mnist DIR] --seed S --epochs E --json out.json
    python -m mnistpipe.lab.bench_parts dae [--mnist DIR] --noise-std STD --dae '{"width": 8, ...}' --json out.json

Three trainers, each scored on the test images after every epoch with the training clock stopped:

- reference: pytorch/examples mnist as published: DataLoader with per-sample PIL/ToTensor/Normalize, its
  `ReferenceNet`, Adadelta lr 1, StepLR gamma 0.7 per epoch, batch 64.
- refloop: the same network, optimiser, schedule and batch size, trained by this project's loop
  (`train.train_module`: in-memory tensors normalised once, channels_last, batches by index; it drops the ragged
  last batch of 32 images per epoch). (reference)/(refloop) is the engineering gain alone.
- project: `train.train_cnn` with the speed recipe `DEFAULT_CNN` / `DEFAULT_HP`, which `select` chose on the
  validation split (engineering and recipe together).

The reference's schedule does not depend on its length (StepLR steps per epoch, and evaluating the test set
draws no random numbers), so the model after epoch k of an E-epoch run is exactly the k-epoch schedule's final
model: one run of E epochs per seed gives the schedules 1..E. The project's one-cycle schedule depends on its
length, so each of its schedules is a run of its own.

The autoencoder part trains with the pipeline's train_dae settings and add_awgn noise level, and the selection
scores on the pipeline's validation split: `bench.main` reads them from params.yaml and passes them in.

Imports neither dvc, dvclive nor optuna: it runs on a bare GPU machine with torch and torchvision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from .. import data, models, noise, tensors, train
from ..errors import PipelineError
from ..params import CNNConfig, DAEConfig
from .cli import mnist_source, run_cli

# pytorch/examples normalises MNIST with the training set's pixel mean and standard deviation.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# The speed recipe: the 99.2 % pick of `python -m mnistpipe.lab.bench --select` (benchmarks/select-cpu-2core.json);
# "epochs" is the schedule the pick reached it in, the benchmark runs schedules of 1-3 epochs of it.
DEFAULT_CNN = CNNConfig(kernel_size=3, stride=1, dropout=0.0, channels=(16, 32, 64), convs_per_block=1, hidden=128,
                        batchnorm=True)
DEFAULT_HP = dict(lr=0.012, epochs=2, batch_size=256, seed=0, weight_decay=5e-4, label_smoothing=0.1, max_shift=0)
SELECT_SEEDS = (100, 101, 102)  # not the benchmark's seeds 0-4: no benchmark run repeats a selection run
SELECT_GRID = tuple(dict(batch_size=b, lr=lr) for b in (256, 512) for lr in (0.008, 0.012, 0.016))
SELECT_EPOCHS = (1, 2)
SELECT_RULE = ("for each target, the candidate with the fewest training images processed (epochs x training images) "
               "whose mean validation accuracy over the seeds reaches the target; ties go to the higher mean. "
               "Candidates are trained in order of cost, and the search stops once every target has a pick. The "
               "recipe is the 99.2 % pick (the 99.0 % pick when none reaches 99.2 %).")


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


def adadelta_steplr(*, lr: float = 1.0, gamma: float = 0.7) -> train.OptimizerFactory:
    """pytorch/examples' optimiser for `train.train_module`: Adadelta at `lr`, times `gamma` after every epoch."""
    def make(params, steps: int, epochs: int):
        opt = torch.optim.Adadelta(params, lr=lr)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=gamma), True
    return make


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return (tensors.to_float(x) - MNIST_MEAN) / MNIST_STD


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device) -> float:
    return float((train.predict(model, x, device=device).argmax(1) == y).float().mean())


def run_reference(x, y, x_test, y_test, *, epochs: int, seed: int, device: str = "auto") -> list[dict]:
    """pytorch/examples mnist as published; the test accuracy and training seconds after each epoch."""
    dev = train.resolve_device(device)
    torch.manual_seed(seed)  # the initialisation, the DataLoader's shuffling and dropout all draw from it
    model = ReferenceNet().to(dev)
    loader = torch.utils.data.DataLoader(_PILDataset(x, y), batch_size=64, shuffle=True)
    x_eval = _normalised(x_test)
    opt, sched, _ = adadelta_steplr()(model.parameters(), len(loader), epochs)
    clock, curve = train.Stopwatch(dev), []
    for epoch in range(1, epochs + 1):
        model.train()
        clock.start()
        for xb, yb in loader:
            xb, yb = xb.to(dev), yb.to(dev)
            opt.zero_grad()
            F.nll_loss(model(xb), yb).backward()
            opt.step()
        sched.step()
        seconds = clock.stop()  # the test pass below is not training
        curve.append({"epoch": epoch, "test_acc": _accuracy(model, x_eval, y_test, dev), "train_seconds": seconds})
    return curve


def _recorder(curve: list[dict]) -> train.EpochCallback:
    """An on_epoch callback keeping (epoch, val_acc as test_acc, train_seconds): the val set given is the test set."""
    return lambda epoch, rec: curve.append({"epoch": epoch, "test_acc": rec["val_acc"],
                                            "train_seconds": rec["train_seconds"]})


def run_refloop(x, y, x_test, y_test, *, epochs: int, seed: int, device: str = "auto") -> list[dict]:
    """`ReferenceNet` with the reference's optimiser, schedule and batch size, trained by this project's loop."""
    torch.manual_seed(seed)
    curve: list[dict] = []
    train.train_module(ReferenceNet(), _normalised(x), y, _normalised(x_test), y_test, loss_fn=F.nll_loss,
                       optimizer=adadelta_steplr(), epochs=epochs, batch_size=64, seed=seed, device=device,
                       on_epoch=_recorder(curve))
    return curve


def run_project(x, y, x_test, y_test, *, epochs: int, seed: int, device: str = "auto",
                config: CNNConfig = DEFAULT_CNN, hp: dict | None = None) -> list[dict]:
    """`train_cnn` with the speed recipe as an `epochs`-epoch schedule; its last entry is the schedule's result."""
    curve: list[dict] = []
    hp = {**DEFAULT_HP, **(hp or {}), "epochs": epochs, "seed": seed}
    train.train_cnn(models.CNN(config, seed=seed), tensors.to_float(x), y, tensors.to_float(x_test), y_test, **hp,
                    device=device, on_epoch=_recorder(curve))
    return curve


def dae_settings(params: Any) -> dict[str, Any]:
    """The pipeline's autoencoder settings (a validated `mnistpipe.params.Params`' train_dae section and seed) that
    `run_dae` trains with: {"width", "skips", "lr", "batch_size", "weight_decay", "seed"}."""
    p = params.train_dae
    return {"width": p.width, "skips": p.skips, "lr": p.lr, "batch_size": p.batch_size,
            "weight_decay": p.weight_decay, "seed": params.seed}


def run_dae(x, *, n: int, settings: dict[str, Any], noise_std: float, device: str = "auto") -> dict:
    """Denoising-autoencoder training throughput over one epoch of `n` images with `settings` (`dae_settings`),
    on images with AWGN of standard deviation `noise_std`."""
    config = DAEConfig(**{k: settings[k] for k in DAEConfig.model_fields})
    hp = {k: v for k, v in settings.items() if k not in DAEConfig.model_fields}
    clean = tensors.to_float(x[:n])
    noisy = noise.add_awgn(clean, std=noise_std, generator=torch.Generator().manual_seed(0))
    result = train.train_dae(models.DAE(config, seed=hp["seed"]), noisy, clean, noisy[:1000], clean[:1000], **hp,
                             epochs=1, device=device)
    return {"images_per_s": n / result.metrics["train_seconds"], "val_psnr_after_1_epoch": result.metrics["val_psnr"],
            "batch_size": hp["batch_size"]}


def load_mnist(mnist: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 60,000 training and 10,000 test images (uint8) and labels from a directory or URL of the .gz files."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = data.download([mnist], tmp)
    return (*data.load_pair(raw["train_images"], raw["train_labels"], name="train"),
            *data.load_pair(raw["test_images"], raw["test_labels"], name="test"))


def select(x, y, *, val_size: int, split_seed: int, seeds=SELECT_SEEDS, grid=SELECT_GRID, epochs=SELECT_EPOCHS,
           targets=(0.990, 0.992), limit: int = 0, device: str = "auto", log=print) -> dict:
    """Choose the speed recipe on the pipeline's validation split of the training images (never the test set).

    Trains `DEFAULT_CNN` with `DEFAULT_HP` and each `grid` entry for each schedule length in `epochs` and each
    seed, on the training images minus the `val_size`-image validation split seeded by `split_seed`
    (`data.split`, as the download stage makes it from download.val_size and seed), and scores it on that split.
    The rule is `SELECT_RULE`; returns the candidates and picks.
    """
    parts = data.split(x, y, val_size=val_size, seed=split_seed, limit=limit)
    xt, yt, xv, yv = tensors.to_float(parts["x_train"]), parts["y_train"], tensors.to_float(parts["x_val"]), \
        parts["y_val"]
    candidates: list[dict] = []
    picks: dict[str, dict | None] = {}
    for n_epochs in sorted(epochs):
        for cand in grid:
            accs = [train.train_cnn(models.CNN(DEFAULT_CNN, seed=s), xt, yt, xv, yv,
                                    **{**DEFAULT_HP, **cand, "epochs": n_epochs, "seed": s},
                                    device=device).metrics["val_acc"]
                    for s in seeds]
            row = {**cand, "epochs": n_epochs, "images": n_epochs * len(yt), "val_acc": accs,
                   "val_acc_mean": statistics.fmean(accs), "val_acc_std": statistics.stdev(accs) if len(accs) > 1
                   else 0.0}
            candidates.append(row)
            log(f"select: batch {cand['batch_size']}, lr {cand['lr']}, {n_epochs} epoch(s): val "
                f"{100 * row['val_acc_mean']:.2f} +- {100 * row['val_acc_std']:.2f} %")
        picks = {f"{t:.3f}": pick(candidates, t) for t in targets}
        if all(picks.values()):
            break
    recipe = picks.get("0.992") or picks.get("0.990")
    return {"rule": SELECT_RULE, "train_size": len(yt), "val_size": len(yv), "split_seed": split_seed,
            "seeds": list(seeds), "fixed": {k: v for k, v in DEFAULT_HP.items() if k not in ("lr", "batch_size",
                                                                                             "epochs", "seed")},
            "candidates": candidates, "picks": picks, "recipe": recipe,
            "matches_default": bool(recipe) and all(recipe[k] == DEFAULT_HP[k] for k in ("lr", "batch_size",
                                                                                         "epochs"))}


def pick(candidates: list[dict], target: float) -> dict | None:
    """The cheapest candidate (fewest images) whose mean val accuracy reaches `target`, ties to the higher mean."""
    ok = [c for c in candidates if c["val_acc_mean"] >= target]
    return min(ok, key=lambda c: (c["images"], -c["val_acc_mean"])) if ok else None


PARTS = {"reference": run_reference, "refloop": run_refloop, "project": run_project}


def main(argv: list[str] | None = None) -> dict:
    """Run one part and write its result as JSON."""
    ap = argparse.ArgumentParser(prog="python -m mnistpipe.lab.bench_parts",
                                 description="one part of python -m mnistpipe.lab.bench")
    ap.add_argument("part", choices=[*PARTS, "dae"])
    ap.add_argument("--mnist", help="directory or URL with the MNIST .gz files (default: $MNIST_MIRROR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-size", type=int, default=60000)
    ap.add_argument("--test-size", type=int, default=10000)
    ap.add_argument("--dae-size", type=int, default=10000)
    ap.add_argument("--dae", type=json.loads, help="dae part: its settings as JSON, see dae_settings")
    ap.add_argument("--noise-std", type=float, help="dae part: the AWGN standard deviation (add_awgn.std)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.part == "dae" and (args.dae is None or args.noise_std is None):
        raise PipelineError("the dae part needs --dae SETTINGS_JSON and --noise-std STD (python -m "
                            "mnistpipe.lab.bench passes them from params.yaml)")
    x, y, x_test, y_test = load_mnist(mnist_source(args.mnist))
    x, y, x_test, y_test = x[:args.train_size], y[:args.train_size], x_test[:args.test_size], y_test[:args.test_size]
    out: dict = {"part": args.part, "seed": args.seed, "threads": torch.get_num_threads(), "train_size": len(y),
                 "test_size": len(y_test)}
    if args.part == "dae":
        out.update(run_dae(x, n=args.dae_size, settings=args.dae, noise_std=args.noise_std, device=args.device))
    else:
        out["curve"] = PARTS[args.part](x, y, x_test, y_test, epochs=args.epochs, seed=args.seed,
                                        device=args.device)
    args.json.write_text(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    run_cli(main)
