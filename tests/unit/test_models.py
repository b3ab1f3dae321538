"""mnistpipe.models and .architecture: CNN shapes across kernel/stride/depth, the DAE, the configs, and
checkpoint round trips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from fitting import cnn_config, dae_config
from pydantic import ValidationError

from mnistpipe import io, models, params
from mnistpipe.errors import PipelineError
from mnistpipe.params import CNNConfig, DAEConfig, cnn_feature_side

PARAMS_YAML = Path(__file__).resolve().parents[2] / "params.yaml"

KERNELS = (1, 2, 3, 4, 5, 7)
STRIDES = (1, 2, 3)
DEPTHS = ((1,), (1, 2), (1, 2, 3))  # 1-3 conv blocks, tiny channel counts


def reference_side(kernel_size: int, stride: int, n_blocks: int, convs_per_block: int) -> int:
    """Independent arithmetic: Conv2d(padding=k//2) then MaxPool2d(2), as PyTorch documents them."""
    side = 28
    for i in range(n_blocks):
        for j in range(convs_per_block):  # only the very first conv strides
            side = (side + 2 * (kernel_size // 2) - kernel_size) // (stride if i == j == 0 else 1) + 1
            if side < 1:
                return 0
        if side < 2:
            return 0  # MaxPool2d(2) cannot pool a 1x1 map
        side //= 2
    return side


@pytest.mark.parametrize("stride", STRIDES)
@pytest.mark.parametrize("kernel_size", KERNELS)
def test_cnn_shapes(kernel_size, stride):
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28)
    n_valid = 0
    for channels in DEPTHS:
        for cpb in (1, 2):
            side = cnn_feature_side(kernel_size=kernel_size, stride=stride, n_blocks=len(channels),
                                    convs_per_block=cpb)
            assert side == reference_side(kernel_size, stride, len(channels), cpb), (channels, cpb)
            if side <= 0:
                with pytest.raises(PipelineError, match=f"kernel_size={kernel_size} with stride={stride}"):
                    cnn_config(kernel_size=kernel_size, stride=stride, channels=channels, convs_per_block=cpb,
                              hidden=8)
                continue
            n_valid += 1
            model = models.CNN(cnn_config(kernel_size=kernel_size, stride=stride, channels=channels,
                                         convs_per_block=cpb, hidden=8)).eval()
            with torch.no_grad():
                out = model(x)
                maps = model.features(x)
            assert out.shape == (1, 10)
            assert torch.isfinite(out).all()
            assert len(maps) == len(channels)
            for i, (m, c) in enumerate(zip(maps, channels, strict=True)):
                s = cnn_feature_side(kernel_size=kernel_size, stride=stride, n_blocks=i + 1, convs_per_block=cpb)
                assert m.shape == (1, c, s, s), (channels, cpb, i)
            assert maps[-1].shape[-1] == side  # cnn_feature_side matches the real conv stack
    assert n_valid >= 1  # every kernel/stride pair works with at least one block


def test_cnn_without_hidden_layer_or_batchnorm():
    model = models.CNN(cnn_config(channels=(4,), hidden=0, batchnorm=False)).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 4 * 14 * 14
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("kernel_size, stride, channels", [(3, 28, (32, 64)), (3, 8, (2, 2, 2)), (7, 10, (2, 2, 2))])
def test_cnn_without_spatial_output_raises(kernel_size, stride, channels):
    assert cnn_feature_side(kernel_size=kernel_size, stride=stride, n_blocks=len(channels)) <= 0
    flat = {**cnn_config().model_dump(), "kernel_size": kernel_size, "stride": stride, "channels": channels}
    with pytest.raises(PipelineError, match="leaves no spatial output") as exc:
        params.split_cnn(flat)
    assert "\n" not in str(exc.value) and "use a smaller kernel_size or stride" in str(exc.value)


def test_configs_have_no_defaults_of_their_own():
    """params.yaml is the one place for the baseline's values: the configs declare types and ranges only."""
    assert all(f.is_required() for f in CNNConfig.model_fields.values())
    assert all(f.is_required() for f in DAEConfig.model_fields.values())


def test_split_cnn_separates_architecture_from_training():
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    p = params.validate(raw)
    config, training = params.split_cnn({**p.baseline(), **raw["recipe"]})
    assert config == p.cnn_config() and training == p.cnn_training()
    with pytest.raises(PipelineError, match="unknown CNN hyperparameters width"):
        params.split_cnn({**p.baseline(), **raw["recipe"], "width": 8})


def test_config_from_a_list_equals_one_from_a_tuple():
    a, b = cnn_config(channels=[4, 8]), cnn_config(channels=(4, 8))
    assert a == b and hash(a) == hash(b) and a.channels == (4, 8)
    assert a.model_dump(mode="json") == {"kernel_size": 3, "stride": 1, "dropout": 0.25, "channels": [4, 8],
                                         "convs_per_block": 1, "hidden": 128, "batchnorm": True}
    with pytest.raises(ValidationError):
        a.hidden = 3  # the model built from a config must keep matching it


def test_state_dict_keys_stay_those_of_saved_checkpoints():
    """Saved checkpoints keep loading: the networks' modules, their names and their order stay fixed."""
    cnn = models.CNN(cnn_config(channels=(4, 8), hidden=16)).state_dict()
    block = ["0.weight"] + [f"2.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    head = ["head.2.weight", "head.2.bias", "head.5.weight", "head.5.bias"]
    assert list(cnn) == [f"blocks.{b}.{k}" for b in (0, 1) for k in block] + head
    assert tuple(cnn["head.2.weight"].shape) == (16, 8 * 7 * 7)
    dae = models.DAE(dae_config(width=2)).state_dict()
    convs = [f"{m}.{i}.{p}" for m in ("enc1", "enc2", "mid") for i in (0, 2) for p in ("weight", "bias")]
    assert list(dae)[:len(convs)] == convs
    assert list(dae)[len(convs):] == ["up2.weight", "up2.bias", "dec2.0.weight", "dec2.0.bias", "dec2.2.weight",
                                      "dec2.2.bias", "up1.weight", "up1.bias", "dec1.0.weight", "dec1.0.bias",
                                      "dec1.2.weight", "dec1.2.bias", "out.weight", "out.bias"]


@pytest.mark.parametrize("skips", [True, False])
def test_dae_shape_and_range(skips):
    torch.manual_seed(0)
    model = models.DAE(dae_config(width=4, skips=skips)).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # the skip connections change the decoder's input width
    first_dec = model.dec1[0]
    assert first_dec.in_channels == (8 if skips else 4)


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Move BatchNorm running statistics away from their defaults so a round trip must carry buffers too."""
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, 28, 28))
    return model.eval()


@pytest.mark.parametrize("kind, config", [
    ("cnn", dict(kernel_size=5, stride=2, dropout=0.3, channels=[4, 8], convs_per_block=2, hidden=16,
                 batchnorm=True)),
    ("cnn", dict(kernel_size=3, stride=1, dropout=0.0, channels=[4], convs_per_block=1, hidden=0,
                 batchnorm=False)),
    ("dae", dict(width=4, skips=True)),
    ("dae", dict(width=3, skips=False)),
])
def test_checkpoint_round_trip(tmp_path, kind, config):
    torch.manual_seed(0)
    model = trained_like(models.build(kind, config))
    assert model.config.model_dump(mode="json") == config
    assert type(model.config) is {"cnn": CNNConfig, "dae": DAEConfig}[kind]
    path = tmp_path / "sub" / f"{kind}.pt"
    io.save_checkpoint(path, model, kind=kind, meta={"val_acc": 0.5})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    ckpt = io.load_checkpoint(path, kind=kind, producer="train_x")
    assert ckpt["kind"] == kind and ckpt["config"] == config and ckpt["meta"] == {"val_acc": 0.5}
    torch.manual_seed(123)  # a different init: only the loaded weights can make the outputs agree
    loaded = models.from_checkpoint(ckpt, path=str(path))
    assert not loaded.training and loaded.config == model.config
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_checkpoint_weights_not_matching_config(tmp_path):
    model = models.CNN(cnn_config(channels=(4, 8), hidden=16))
    path = tmp_path / "cnn.pt"
    io.save_checkpoint(path, model, kind="cnn")
    ckpt = io.load_checkpoint(path, kind="cnn", producer="train_baseline")
    ckpt["config"]["channels"] = [4, 16]  # as an edited file would hold
    with pytest.raises(PipelineError, match="weights do not match its config") as exc:
        models.from_checkpoint(ckpt, path=str(path))
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_checkpoint_config_with_unknown_key(tmp_path):
    model = models.DAE(dae_config(width=2))
    path = tmp_path / "dae.pt"
    io.save_checkpoint(path, model, kind="dae")
    ckpt = io.load_checkpoint(path, kind="dae", producer="train_dae")
    ckpt["config"]["depth"] = 3  # as an edited file or one of another version would hold
    with pytest.raises(PipelineError, match="does not fit a 'dae' model"):
        models.from_checkpoint(ckpt, path=str(path))


def test_checkpoint_of_a_config_without_spatial_output(tmp_path):
    model = models.CNN(cnn_config(channels=(4,), hidden=0))
    path = tmp_path / "cnn.pt"
    io.save_checkpoint(path, model, kind="cnn")
    ckpt = io.load_checkpoint(path, kind="cnn", producer="train_baseline")
    ckpt["config"]["stride"] = 28
    with pytest.raises(PipelineError, match="leaves no spatial output"):
        models.from_checkpoint(ckpt, path=str(path))


def test_checkpoint_of_the_wrong_kind(tmp_path):
    model = models.DAE(dae_config(width=2))
    path = tmp_path / "dae.pt"
    io.save_checkpoint(path, model, kind="dae")
    with pytest.raises(PipelineError, match="holds a 'dae' model but a 'cnn' model is expected") as exc:
        io.load_checkpoint(path, kind="cnn", producer="train_dae")
    assert "dvc repro train_dae" in str(exc.value)


def test_tensor_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    io.save_tensors(path, {"x_test": torch.zeros(2)})
    with pytest.raises(PipelineError, match="not a checkpoint of this project"):
        io.load_checkpoint(path, kind="cnn", producer="train_baseline")


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "cnn.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(PipelineError, match="corrupt or not a tensor file") as exc:
        io.load_checkpoint(path, kind="cnn", producer="train_baseline")
    assert "dvc repro train_baseline" in str(exc.value) and "\n" not in str(exc.value)


class Payload:
    """Unpickling this object creates a file: loading it with weights_only=False would run code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"kind": "cnn", "config": {}, "state_dict": {}, "payload": Payload(str(marker))}, path)
    with pytest.raises(PipelineError, match="corrupt or not a tensor file"):
        io.load_checkpoint(path, kind="cnn", producer="train_baseline")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the unsafe path runs the payload ...
    assert marker.exists()  # ... which proves the test above would catch weights_only=False
