"""The schema of params.yaml and the typed configs of the two networks built from it, checked with pydantic.

Every key of params.yaml has one field here, with its type and allowed range; `validate` turns the first problem
into one line that names the key and what is allowed, so a typo such as `droput: 0` fails loudly instead of
silently training with a default. `CNNConfig` and `DAEConfig` are what a network is built from and what its
checkpoint stores: `Params.cnn_config()` and `Params.dae_config()` build them from the validated values, with the
same field types, so a range is written once and there is no second set of defaults.

This module imports no torch: the validate_params stage (and every stage's params check) stays light, and an
edit to the networks in models.py reruns only the stages that build or load one.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from .datasets import NAMES as DATASETS
from .errors import PipelineError

SIDE = 28  # MNIST-format images are SIDE x SIDE pixels
Device = Literal["auto", "cpu", "cuda"]
Dataset = Literal[DATASETS]  # a typo fails with one line naming the choices

# The networks' field types with their ranges, shared by params.yaml's keys and the configs below.
KernelSize = Annotated[int, Field(ge=1, le=SIDE)]
Stride = Annotated[int, Field(ge=1, le=SIDE)]
Dropout = Annotated[float, Field(ge=0, lt=1)]
# A YAML or JSON list becomes a tuple, so configs compare equal and hash whatever they were read from.
Channels = Annotated[tuple[Annotated[int, Field(ge=1)], ...],
                     BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v),
                     Field(min_length=1, max_length=4)]
ConvsPerBlock = Annotated[int, Field(ge=1, le=3)]
Hidden = Annotated[int, Field(ge=0, description="0 = no hidden layer")]
Width = Annotated[int, Field(ge=1)]


def conv_out(size: int, kernel_size: int, stride: int) -> int:
    """Spatial size after a Conv2d with padding kernel_size // 2."""
    return (size + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def cnn_feature_side(*, kernel_size: int, stride: int, n_blocks: int, convs_per_block: int = 1) -> int:
    """Side of the CNN's last feature map; <= 0 means the kernel/stride combination leaves no spatial output."""
    side = SIDE
    for i in range(n_blocks):
        for j in range(convs_per_block):
            # Only the first conv strides: striding every block would shrink 28x28 to nothing by block 3.
            side = conv_out(side, kernel_size, stride if i == j == 0 else 1)
            if side <= 0:
                return 0
        side //= 2
    return side


class _Strict(BaseModel):
    # allow_inf_nan=False: `.inf`, `.nan` (and YAML's 1e400) fail here, in one line, not as "training diverged".
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CNNConfig(_Strict, frozen=True):
    """The classifier's architecture, as models.CNN builds it and a checkpoint stores it.

    `len(channels)` conv blocks (Conv2d, MaxPool, [BatchNorm,] ReLU), `convs_per_block` convolutions each, then
    Dropout and a fully connected head with `hidden` units (0 = a single linear layer). `stride` applies to the
    first convolution only. A kernel/stride that leaves no spatial output on 28x28 images is refused.
    """

    kernel_size: KernelSize = Field(description="convolution kernel side, pixels")
    stride: Stride = Field(description="stride of the first convolution, pixels")
    dropout: Dropout = Field(description="dropout probability before each fully connected layer")
    channels: Channels = Field(description="output channels of each conv block")
    convs_per_block: ConvsPerBlock = Field(description="convolutions per block")
    hidden: Hidden = Field(description="units of the hidden fully connected layer; 0 = none")
    batchnorm: bool = Field(description="BatchNorm after each block's pooling")

    @model_validator(mode="after")
    def _spatial(self) -> CNNConfig:
        if cnn_feature_side(kernel_size=self.kernel_size, stride=self.stride, n_blocks=len(self.channels),
                            convs_per_block=self.convs_per_block) <= 0:
            raise ValueError(f"kernel_size={self.kernel_size} with stride={self.stride} leaves no spatial output "
                             f"after {len(self.channels)} conv blocks on {SIDE}x{SIDE} images; use a smaller "
                             "kernel_size or stride")
        return self


class DAEConfig(_Strict, frozen=True):
    """The denoising autoencoder's architecture: `width` channels at full resolution, U-Net `skips` or none."""

    width: Width = Field(description="channels at full resolution")
    skips: bool = Field(description="U-Net skip connections")


# The CNN's training settings: keyword arguments of train.train_cnn, apart from the data, seed and device.
CNN_TRAINING = ("lr", "epochs", "batch_size", "weight_decay", "label_smoothing", "max_shift")


def split_cnn(flat: Mapping[str, Any]) -> tuple[CNNConfig, dict[str, Any]]:
    """A flat mapping of CNN hyperparameters (a tuning trial's, tuned_config.json's) as the config it builds and
    train.train_cnn's keyword arguments; any other key is an error."""
    unknown = set(flat) - set(CNNConfig.model_fields) - set(CNN_TRAINING)
    if unknown:
        raise PipelineError(f"unknown CNN hyperparameters {', '.join(sorted(unknown))}")
    try:
        config = CNNConfig.model_validate({k: v for k, v in flat.items() if k in CNNConfig.model_fields})
    except ValidationError as exc:
        raise PipelineError(_describe(exc.errors()[0])) from None
    return config, {k: flat[k] for k in CNN_TRAINING if k in flat}


class Download(_Strict):
    val_size: int = Field(gt=0)
    train_limit: int = Field(ge=0, description="0 = all 60,000 training images")
    test_limit: int = Field(ge=0, description="0 = all 10,000 test images")
    timeout: float = Field(gt=0, le=86400)
    verify_md5: bool = Field(description="false only for IDX drop-ins such as Fashion-MNIST, whose sums differ")


class AddAwgn(_Strict):
    std: float = Field(ge=0, le=10)


class Recipe(_Strict):
    """The rest of the CNN's architecture (CNNConfig's keys, typed as there) and training settings beyond the
    report's six hyperparameters."""

    channels: Channels
    convs_per_block: ConvsPerBlock
    hidden: Hidden
    batchnorm: bool
    weight_decay: float = Field(ge=0, le=1)
    label_smoothing: float = Field(ge=0, lt=1)
    max_shift: int = Field(ge=0, le=8)


class Choices(_Strict):
    choices: list[Union[int, float]] = Field(min_length=1)


class IntRange(_Strict):
    low: int
    high: int
    log: bool = False


class FloatRange(_Strict):
    low: float
    high: float
    log: bool = False


class Space(_Strict):
    """Search space of the report's six hyperparameters: `{choices: [...]}` or `{low, high, log}`."""

    kernel_size: Union[Choices, IntRange]
    stride: Union[Choices, IntRange]
    dropout: Union[Choices, FloatRange]
    lr: Union[Choices, FloatRange]
    epochs: Union[Choices, IntRange]
    batch_size: Union[Choices, IntRange]

    @model_validator(mode="after")
    def _ranges(self) -> Space:
        for name in type(self).model_fields:
            dim = getattr(self, name)
            if isinstance(dim, (IntRange, FloatRange)) and not dim.low <= dim.high:
                raise ValueError(f"{name}: low ({dim.low}) must not exceed high ({dim.high})")
            if isinstance(dim, (IntRange, FloatRange)) and dim.log and dim.low <= 0:
                raise ValueError(f"{name}: a log range needs low > 0")
        return self


class Sampler(_Strict):
    """Optuna's TPE sampler (seeded with `seed`): random draws for the first `n_startup_trials`, then TPE."""

    n_startup_trials: int = Field(ge=0, description="random trials before TPE models the results")
    multivariate: bool = Field(description="model the six hyperparameters jointly instead of one by one")


class MedianPruner(_Strict):
    """Stop a trial whose val accuracy after an epoch is below the median of earlier trials at that epoch."""

    kind: Literal["median"]
    warmup_epochs: int = Field(ge=0, description="epochs of each trial that are never pruned")


class HyperbandPruner(_Strict):
    """Multi-fidelity: successive halving in several brackets with epochs as the resource (max: the space's)."""

    kind: Literal["hyperband"]
    min_resource: int = Field(ge=1, description="epochs a trial runs before its first rung")
    reduction_factor: int = Field(ge=2, description="1 / the share of trials promoted at each rung")


class NoPruner(_Strict):
    """Every trial runs all its epochs."""

    kind: Literal["none"]


Pruner = Annotated[Union[MedianPruner, HyperbandPruner, NoPruner], Field(discriminator="kind")]


def _space_max(dim: Choices | IntRange | FloatRange) -> float:
    return max(dim.choices) if isinstance(dim, Choices) else dim.high


class TuneCnn(_Strict):
    budget: float = Field(gt=0, description="training passes over the trial subset (trial_train_size images x "
                          "epochs), summed over all trials; pruned ones count the epochs they ran")
    n_trials: int = Field(ge=0, description="hard cap on the number of trials; 0 = only the budget limits them")
    trial_train_size: int = Field(ge=0, description="0 = the whole training split")
    storage: str = Field(description="Optuna RDB URL (postgresql+psycopg2://..., sqlite:///...); empty = in memory")
    n_workers: int = Field(ge=1, le=256, description="local worker processes; > 1 needs an RDB storage")
    study_name: str = Field(min_length=1)
    space: Space  # before pruner: the hyperband check reads it
    sampler: Sampler
    pruner: Pruner

    # Field validators (not a model one) so the error line names the key and shows its value, not the section.
    @field_validator("storage", "n_workers")
    @classmethod
    def _workers_share_an_rdb_storage(cls, v: Any, info: ValidationInfo) -> Any:
        if info.field_name == "storage" and v and "://" not in v:
            raise ValueError("must be empty or an Optuna RDB URL such as sqlite:///../tune.db or "
                             "postgresql+psycopg2://user@host/db")
        if info.field_name == "n_workers" and v > 1 and not info.data.get("storage"):
            raise ValueError("above 1 needs tune_cnn.storage (an RDB URL the workers share, e.g. "
                             "sqlite:///../tune.db)")
        return v

    @field_validator("pruner")
    @classmethod
    def _hyperband_fits_the_epochs(cls, v: Any, info: ValidationInfo) -> Any:
        space = info.data.get("space")
        if isinstance(v, HyperbandPruner) and space is not None and v.min_resource > _space_max(space.epochs):
            raise ValueError(f"min_resource ({v.min_resource}) exceeds the most epochs a trial runs "
                             f"(tune_cnn.space.epochs: at most {_space_max(space.epochs):g}); lower min_resource")
        return v


class Retrain(_Strict):
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0, le=10)


class TrainDae(_Strict):
    width: Width  # this and skips: DAEConfig's keys, typed as there
    skips: bool
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0, le=10)
    batch_size: int = Field(ge=1)
    weight_decay: float = Field(ge=0, le=1)
    train_size: int = Field(ge=0, description="0 = the whole training split")


class Denoise(_Strict):
    batch_size: int = Field(ge=1)


class Evaluate(_Strict):
    n_misclassified: int = Field(ge=0)


class Visualize(_Strict):
    tsne_size: int = Field(ge=10)
    perplexity: float = Field(gt=0, le=1000)
    tsne_threads: int = Field(ge=1)
    # plots.TSNE_METHODS (a unit test keeps the two lists equal); python -m mnistpipe.bench_tsne compares them
    tsne_method: Literal["sklearn-bh-raw", "pca50+sklearn-bh", "opentsne-fft-raw", "pca50+opentsne-fft",
                         "opentsne-bh-raw", "pca50+opentsne-bh"]
    sample_index: int = Field(ge=0)

    @model_validator(mode="after")
    def _perplexity_below_size(self) -> Visualize:
        # t-SNE needs more points than the perplexity (its effective number of neighbours).
        if self.perplexity >= self.tsne_size:
            raise ValueError(f"perplexity={self.perplexity:g} must be below tsne_size={self.tsne_size}; lower it")
        return self


class Robustness(_Strict):
    stds: list[Annotated[float, Field(ge=0, le=10)]] = Field(min_length=1, description="noise levels of the curve")
    batch_size: int = Field(ge=1)

    @field_validator("stds")
    @classmethod
    def _distinct(cls, v: list[float]) -> list[float]:
        # Each level names its own metrics; a repeated one would silently overwrite the other.
        if len(set(v)) != len(v):
            raise ValueError("must not repeat a noise level")
        return v


class Params(_Strict):
    seed: int = Field(ge=0)
    dataset: Dataset
    device: Device = Field(description="auto = CUDA when present; every stage that runs a model uses it")
    kernel_size: KernelSize  # the report's six CNN hyperparameters, typed as in CNNConfig
    stride: Stride
    dropout: Dropout
    lr: float = Field(gt=0, le=10)
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1)
    download: Download
    add_awgn: AddAwgn
    recipe: Recipe = Field(description="architecture and training settings beyond the six, shared by the baseline, "
                           "every tuning trial and the tuned CNN, so tuned vs baseline compares the six alone")
    tune_cnn: TuneCnn
    train_on_noisy: Retrain
    train_dae: TrainDae
    denoise: Denoise
    train_on_denoised: Retrain
    evaluate: Evaluate
    visualize: Visualize
    robustness: Robustness

    @model_validator(mode="after")
    def _cnn_builds(self) -> Params:
        try:
            self.cnn_config()
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return self

    def cnn_config(self) -> CNNConfig:
        """The baseline CNN's architecture: the top-level kernel_size, stride and dropout, and the recipe's."""
        return CNNConfig(**{k: getattr(self if k in BASELINE_KEYS else self.recipe, k) for k in CNNConfig.model_fields})

    def cnn_training(self) -> dict[str, Any]:
        """The baseline CNN's training settings (train.train_cnn's keyword arguments): the top-level lr, epochs
        and batch_size, and the recipe's."""
        return {k: getattr(self if k in BASELINE_KEYS else self.recipe, k) for k in CNN_TRAINING}

    def baseline(self) -> dict[str, Any]:
        """The report's six top-level CNN hyperparameters (the baseline; the search's space names the same six)."""
        return {k: getattr(self, k) for k in BASELINE_KEYS}

    def dae_config(self) -> DAEConfig:
        """The autoencoder's architecture, from the train_dae section."""
        return DAEConfig(**{k: getattr(self.train_dae, k) for k in DAEConfig.model_fields})


# Names pydantic puts into an error's location for a union member; the key path the user wrote has none of them.
UNION_TAGS = ("Choices", "IntRange", "FloatRange", "median", "hyperband", "none")
BASELINE_KEYS = ("kernel_size", "stride", "dropout", "lr", "epochs", "batch_size")
# The keys that hold a section of their own (a mapping), as opposed to top-level values such as seed or device.
SECTIONS = tuple(k for k, f in Params.model_fields.items() if isinstance(f.annotation, type)
                 and issubclass(f.annotation, BaseModel))


def _allowed(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _describe(err: dict) -> str:
    loc = tuple(p for p in err["loc"] if isinstance(p, str) and p not in UNION_TAGS)
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed(Params, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{key}'{hint}" + (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
    if err["type"] == "missing":
        return f"missing key '{key}'; add it (see the README's params table for its meaning and default)"
    ctx = err.get("ctx") or {}
    if err["type"] in ("union_tag_not_found", "union_tag_invalid"):  # a pruner without a known `kind`
        return f"'{key}' needs kind: median, hyperband or none, got {err['input']!r}"
    bounds = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in ctx.items() if k in ("ge", "gt", "le", "lt"))
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check across keys (the CNN's geometry, the baseline inside the search space) names its keys
        return msg
    return f"'{key}' {msg}" + (f" ({bounds})" if bounds and bounds not in msg else "") + f", got {err['input']!r}"


def _rank(err: dict, errors: list[dict]) -> int:
    """Which error to report: first a bad value in the union member whose keys fit (`{low, high}` holding .inf
    is a FloatRange, not a Choices with unknown keys), then an unknown key (a typo explains a "missing" one)."""
    tag = next((p for p in err["loc"] if p in UNION_TAGS), None)
    if tag is not None and all(e["type"] not in ("extra_forbidden", "missing") for e in errors if tag in e["loc"]):
        return 0
    return 1 if err["type"] == "extra_forbidden" else 2


def validate(raw: Any, *, source: str = "params.yaml") -> Params:
    """Check a loaded params mapping; raise a one-line `PipelineError` naming the first bad key."""
    if not isinstance(raw, dict):
        raise PipelineError(f"{source} must be a mapping of keys to values, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        found = exc.errors()
        errors = sorted(found, key=lambda e: _rank(e, found))
        # A union reports one error per alternative; the first one is the most readable.
        raise PipelineError(f"{source}: {_describe(errors[0])}"
                            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")) from None


def tuned_hyperparameters(best: Any, *, source: str, producer: str) -> dict[str, Any]:
    """The `hyperparameters` of a configuration file (tune_cnn's best trial, select_cnn's choice: the six and the
    recipe, flat), checked with params.yaml's own rules so a stale or edited file ("kernel_size": "7", dropout
    1.5) fails here in one line, not deep inside torch; the message names `producer`, the stage to rerun."""
    hp = best.get("hyperparameters") if isinstance(best, dict) else None
    if not isinstance(hp, dict) or set(hp) != set(BASELINE_KEYS) | set(Recipe.model_fields):
        raise PipelineError(f"{source} does not hold the expected hyperparameters; rerun `dvc repro {producer}`")
    try:
        checked = _TunedHyperparameters.model_validate(hp)
        CNNConfig(**{k: getattr(checked, k) for k in CNNConfig.model_fields})
    except ValidationError as exc:
        raise PipelineError(f"{source}: {_describe(exc.errors()[0])}; rerun `dvc repro {producer}`") from None
    return hp


def parse(text: str, *, source: str = "params.yaml") -> Params:
    """Validate the params file's `text` (all of it, so a typo anywhere fails every stage); `source` names it in
    errors. The caller reads the file: this module reads none."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise PipelineError(f"{source} is not valid YAML ({first})") from None
    return validate(raw, source=source)


# tune_cnn's best configuration: the six top-level hyperparameters (same rules as in Params) plus the recipe.
_TunedHyperparameters = create_model(
    "TunedHyperparameters", __base__=Recipe,
    **{k: (Params.model_fields[k].annotation, Params.model_fields[k]) for k in BASELINE_KEYS})
