"""mnistpipe.tensors: the image conversions and the count check that every stage uses."""

from __future__ import annotations

import pytest
import torch

from mnistpipe import tensors
from mnistpipe.errors import PipelineError


def test_to_float_and_back_is_exact_for_every_pixel_value():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).repeat(3, 1, 1)
    f = tensors.to_float(x)
    assert f.shape == (3, 1, 16, 16) and f.dtype == torch.float32
    assert float(f.min()) == 0.0 and float(f.max()) == 1.0
    assert torch.equal(tensors.to_uint8(f), x)


def test_to_uint8_rounds_and_clips():
    f = torch.tensor([-0.5, 0.0, 0.499 / 255, 0.501 / 255, 1.0, 3.0]).reshape(1, 1, 1, 6)
    assert tensors.to_uint8(f).flatten().tolist() == [0, 0, 0, 1, 255, 255]


def test_check_counts_names_both_files_and_the_stage():
    images = {"x_train": torch.zeros(5, 28, 28), "x_val": torch.zeros(2, 28, 28)}
    tensors.check_counts(images, {"y_train": torch.zeros(5), "y_val": torch.zeros(2)}, images_source="a.pt",
                         labels_source="b.pt", producer="add_awgn")
    with pytest.raises(PipelineError) as exc:
        tensors.check_counts(images, {"y_train": torch.zeros(5), "y_val": torch.zeros(3)}, images_source="a.pt",
                             labels_source="b.pt", producer="add_awgn")
    assert str(exc.value) == "a.pt has 2 val images but b.pt has 3 labels; rerun `dvc repro add_awgn`"
