"""The two networks' architecture configs and the CNN's geometry, apart from the networks themselves.

`CNNConfig` and `DAEConfig` are what a model is built from, what the trainer receives and what a checkpoint
stores (as a plain dict). Each field's type carries its allowed range; the params schema gives the params.yaml
keys of the same name the same types, so a range is written once. The schema checks params for every stage, so this
module imports no torch: an edit to the networks in models.py reruns only the stages that build or load one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, TypeVar

from pydantic import Field

from .errors import PipelineError

SIDE = 28  # MNIST images are SIDE x SIDE pixels
_C = TypeVar("_C", bound="_Config")

# Field types with their ranges (pydantic reads the Field metadata; a plain dataclass ignores it).
KernelSize = Annotated[int, Field(ge=1, le=SIDE)]
Stride = Annotated[int, Field(ge=1, le=SIDE)]
Dropout = Annotated[float, Field(ge=0, lt=1)]
Channels = Annotated[Sequence[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=4)]
ConvsPerBlock = Annotated[int, Field(ge=1, le=3)]
Hidden = Annotated[int, Field(ge=0, description="0 = no hidden layer")]
Width = Annotated[int, Field(ge=1)]


class _Config:
    """What both configs share: splitting a flat mapping of hyperparameters, and the plain-dict form."""

    @classmethod
    def split(cls: type[_C], flat: Mapping[str, Any]) -> tuple[_C, dict[str, Any]]:
        """The config built from `flat`'s architecture keys, and every other key (the training settings)."""
        names = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in flat.items() if k in names})
        return config, {k: v for k, v in flat.items() if k not in names}

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (lists, not tuples), as checkpoints and JSON files hold it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CNNConfig(_Config):
    """The classifier's architecture; the defaults are params.yaml's baseline.

    `len(channels)` conv blocks (Conv2d, MaxPool, [BatchNorm,] ReLU), `convs_per_block` convolutions each, then
    Dropout and a fully connected head with `hidden` units (0 = a single linear layer). `stride` applies to the
    first convolution only. Building a config whose kernel/stride leaves no spatial output raises PipelineError.
    """

    kernel_size: KernelSize = 3
    stride: Stride = 1
    dropout: Dropout = 0.25
    channels: Channels = (16, 32, 64)
    convs_per_block: ConvsPerBlock = 1
    hidden: Hidden = 128
    batchnorm: bool = True

    def __post_init__(self) -> None:
        # A YAML or JSON list and a tuple must give equal (and hashable) configs.
        object.__setattr__(self, "channels", tuple(self.channels))
        problem = spatial_problem(kernel_size=self.kernel_size, stride=self.stride, n_blocks=len(self.channels),
                                  convs_per_block=self.convs_per_block)
        if problem:
            raise PipelineError(f"{problem}; use a smaller kernel_size or stride")


@dataclass(frozen=True)
class DAEConfig(_Config):
    """The denoising autoencoder's architecture: `width` channels at full resolution, U-Net `skips` or none."""

    width: Width = 8
    skips: bool = True


def conv_out(size: int, kernel_size: int, stride: int) -> int:
    """Spatial size after a Conv2d with padding kernel_size // 2."""
    return (size + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def cnn_feature_side(*, kernel_size: int, stride: int, n_blocks: int, convs_per_block: int = 1) -> int:
    """Side of the last feature map; <= 0 means the kernel/stride combination leaves no spatial output."""
    side = SIDE
    for i in range(n_blocks):
        for j in range(convs_per_block):
            # Only the first conv strides: striding every block would shrink 28x28 to nothing by block 3.
            side = conv_out(side, kernel_size, stride if i == j == 0 else 1)
            if side <= 0:
                return 0
        side //= 2
    return side


def spatial_problem(*, kernel_size: int, stride: int, n_blocks: int, convs_per_block: int) -> str:
    """The one geometry check: why these settings leave no spatial output on 28x28 images, or '' if they don't."""
    if cnn_feature_side(kernel_size=kernel_size, stride=stride, n_blocks=n_blocks,
                        convs_per_block=convs_per_block) > 0:
        return ""
    return (f"kernel_size={kernel_size} with stride={stride} leaves no spatial output after {n_blocks} conv "
            f"blocks on {SIDE}x{SIDE} images")
