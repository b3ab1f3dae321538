"""The classifier CNN and the denoising autoencoder, each built from its config (params.CNNConfig, DAEConfig)."""

from __future__ import annotations

import torch
from pydantic import ValidationError
from torch import nn

from .errors import PipelineError
from .params import CNNConfig, DAEConfig, cnn_feature_side


class CNN(nn.Module):
    """Conv blocks (Conv2d, MaxPool, [BatchNorm,] ReLU), Dropout, and a small fully connected head.

    `stride` applies to the first convolution; `padding = kernel_size // 2` keeps the other sizes. With `seed`,
    torch's global generator is seeded first, so the initial weights (and the dropout masks drawn from that
    generator while training) are reproducible.
    """

    def __init__(self, config: CNNConfig, *, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.config = config
        k = config.kernel_size
        blocks, c_in = [], 1
        for i, c_out in enumerate(config.channels):
            layers: list[nn.Module] = []
            for j in range(config.convs_per_block):
                # Only the first conv strides (params.cnn_feature_side computes the same sizes).
                stride = config.stride if i == j == 0 else 1
                layers.append(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=not config.batchnorm))
                if j == config.convs_per_block - 1:
                    # Pool straight after the block's last conv: BatchNorm and ReLU then touch 4x fewer values.
                    layers.append(nn.MaxPool2d(2))
                if config.batchnorm:
                    layers.append(nn.BatchNorm2d(c_out))
                layers.append(nn.ReLU(inplace=True))
                c_in = c_out
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        side = cnn_feature_side(kernel_size=k, stride=config.stride, n_blocks=len(config.channels),
                                convs_per_block=config.convs_per_block)
        flat = c_in * side * side
        hidden, dropout = config.hidden, config.dropout
        head: list[nn.Module] = [nn.Dropout(dropout), nn.Flatten()]
        if hidden:
            head += [nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 10)]
        else:
            head += [nn.Linear(flat, 10)]
        self.head = nn.Sequential(*head)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every conv block (after pooling), for feature-map figures."""
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class DAE(nn.Module):
    """Convolutional denoising autoencoder: 28 -> 14 -> 7 and back, with U-Net skips when `skips` is set.

    The decoder estimates the noise; the output is the input minus that estimate, clipped to [0, 1].
    """

    def __init__(self, config: DAEConfig, *, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)  # reproducible initial weights, as for the CNN
        self.config = config
        w, skips = config.width, config.skips
        self.enc1, self.enc2, self.mid = _conv(1, w), _conv(w, 2 * w), _conv(2 * w, 2 * w)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(2 * w, 2 * w, 2, stride=2)
        self.dec2 = _conv(4 * w if skips else 2 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _conv(2 * w if skips else w, w)
        self.out = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.up2(m)
        d2 = self.dec2(torch.cat([d2, e2], 1) if self.config.skips else d2)
        d1 = self.up1(d2)
        d1 = self.dec1(torch.cat([d1, e1], 1) if self.config.skips else d1)
        # Residual learning (as in DnCNN): the net estimates the noise, which trains far faster than
        # predicting the clean image from scratch and cannot collapse to an all-black output.
        return (x - self.out(d1)).clamp(0.0, 1.0)


KINDS = {"cnn": (CNN, CNNConfig), "dae": (DAE, DAEConfig)}


def build(kind: str, config: dict, *, seed: int | None = None) -> nn.Module:
    """Rebuild a model of `kind` from the plain-dict config saved in its checkpoint; `seed` as the constructors
    take it."""
    if kind not in KINDS:
        raise PipelineError(f"unknown model kind {kind!r} (expected one of {', '.join(KINDS)}); rerun the stage")
    model_type, config_type = KINDS[kind]
    try:
        return model_type(config_type.model_validate(config), seed=seed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise PipelineError(f"checkpoint config {config} does not fit a {kind!r} model "
                            f"({where}: {first['msg']})") from None


def from_checkpoint(ckpt: dict, *, path: str = "checkpoint", seed: int | None = None) -> nn.Module:
    """Build the model of a loaded checkpoint and load its weights; a mismatch is a user error. `seed` seeds
    torch's global generator as the constructors do: the dropout masks of a network trained further from it."""
    model = build(ckpt["kind"], ckpt["config"], seed=seed)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise PipelineError(f"{path}: weights do not match its config ({first}); rerun the stage that made it") from exc
    return model.eval()
