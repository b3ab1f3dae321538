"""Train a network from its config in one call, as the stages do in two (build it with its seed, then train it)."""

from __future__ import annotations

from mnistpipe import models, train
from mnistpipe.params import CNNConfig, DAEConfig

# The recipe's training settings that tests leave at a neutral value unless they study them.
NEUTRAL = {"weight_decay": 5e-4, "label_smoothing": 0.0, "max_shift": 0}


def fit_cnn(x, y, xv, yv, config, *, seed: int, **training):
    """models.CNN(config, seed=seed) trained by train.train_cnn; returns (model, FitResult)."""
    model = models.CNN(config, seed=seed)
    return model, train.train_cnn(model, x, y, xv, yv, seed=seed, **{**NEUTRAL, **training})


def fit_dae(noisy, clean, noisy_val, clean_val, config, *, seed: int, weight_decay: float = 0.0, **training):
    """models.DAE(config, seed=seed) trained by train.train_dae; returns (model, FitResult)."""
    model = models.DAE(config, seed=seed)
    return model, train.train_dae(model, noisy, clean, noisy_val, clean_val, seed=seed, weight_decay=weight_decay,
                                  **training)


def cnn_config(**fields) -> CNNConfig:
    """A CNNConfig for tests: params.yaml's baseline architecture with `fields` changed."""
    base = {"kernel_size": 3, "stride": 1, "dropout": 0.25, "channels": (16, 32, 64), "convs_per_block": 1,
            "hidden": 128, "batchnorm": True}
    return CNNConfig(**{**base, **fields})


def dae_config(**fields) -> DAEConfig:
    """A DAEConfig for tests: params.yaml's autoencoder with `fields` changed."""
    return DAEConfig(**{"width": 8, "skips": True, **fields})
