"""mnistpipe.models: CNN shapes across kernel/stride/depth, the DAE, and checkpoint round trips."""

from __future__ import annotations

import os

import pytest
import torch

from mnistpipe import io, models
from mnistpipe.errors import PipelineError

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
            side = models.cnn_feature_side(kernel_size=kernel_size, stride=stride, n_blocks=len(channels),
                                           convs_per_block=cpb)
            assert side == reference_side(kernel_size, stride, len(channels), cpb), (channels, cpb)
            if side <= 0:
                with pytest.raises(PipelineError, match=f"kernel_size={kernel_size} with stride={stride}"):
                    models.CNN(kernel_size=kernel_size, stride=stride, channels=channels, convs_per_block=cpb,
                               hidden=8)
                continue
            n_valid += 1
            model = models.CNN(kernel_size=kernel_size, stride=stride, channels=channels, convs_per_block=cpb,
                               hidden=8).eval()
            with torch.no_grad():
                out = model(x)
                maps = model.features(x)
            assert out.shape == (1, 10)
            assert torch.isfinite(out).all()
            assert len(maps) == len(channels)
            for i, (m, c) in enumerate(zip(maps, channels, strict=True)):
                s = models.cnn_feature_side(kernel_size=kernel_size, stride=stride, n_blocks=i + 1,
                                            convs_per_block=cpb)
                assert m.shape == (1, c, s, s), (channels, cpb, i)
            assert maps[-1].shape[-1] == side  # cnn_feature_side matches the real conv stack
    assert n_valid >= 1  # every kernel/stride pair works with at least one block


def test_cnn_without_hidden_layer_or_batchnorm():
    model = models.CNN(channels=(4,), hidden=0, batchnorm=False).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].in_features == 4 * 14 * 14
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("kernel_size, stride, channels", [(3, 28, (32, 64)), (3, 8, (2, 2, 2)), (7, 10, (2, 2, 2))])
def test_cnn_without_spatial_output_raises(kernel_size, stride, channels):
    assert models.cnn_feature_side(kernel_size=kernel_size, stride=stride, n_blocks=len(channels)) <= 0
    with pytest.raises(PipelineError, match="leaves no spatial output") as exc:
        models.CNN(kernel_size=kernel_size, stride=stride, channels=channels)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("skips", [True, False])
def test_dae_shape_and_range(skips):
    torch.manual_seed(0)
    model = models.DAE(width=4, skips=skips).eval()
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
    assert model.config == config
    path = tmp_path / "sub" / f"{kind}.pt"
    io.save_checkpoint(path, model, kind=kind, config=model.config, meta={"val_acc": 0.5})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    ckpt = io.load_checkpoint(path, kind=kind, producer="train_x")
    assert ckpt["kind"] == kind and ckpt["config"] == config and ckpt["meta"] == {"val_acc": 0.5}
    torch.manual_seed(123)  # a different init: only the loaded weights can make the outputs agree
    loaded = models.from_checkpoint(ckpt, path=str(path))
    assert not loaded.training
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def test_checkpoint_weights_not_matching_config(tmp_path):
    model = models.CNN(channels=(4, 8), hidden=16)
    path = tmp_path / "cnn.pt"
    io.save_checkpoint(path, model, kind="cnn", config={**model.config, "channels": [4, 16]})
    ckpt = io.load_checkpoint(path, kind="cnn", producer="train_baseline")
    with pytest.raises(PipelineError, match="weights do not match its config") as exc:
        models.from_checkpoint(ckpt, path=str(path))
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_checkpoint_config_with_unknown_key(tmp_path):
    model = models.DAE(width=2)
    path = tmp_path / "dae.pt"
    io.save_checkpoint(path, model, kind="dae", config={**model.config, "depth": 3})
    ckpt = io.load_checkpoint(path, kind="dae", producer="train_dae")
    with pytest.raises(PipelineError, match="does not fit a 'dae' model"):
        models.from_checkpoint(ckpt, path=str(path))


def test_checkpoint_of_the_wrong_kind(tmp_path):
    model = models.DAE(width=2)
    path = tmp_path / "dae.pt"
    io.save_checkpoint(path, model, kind="dae", config=model.config)
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
