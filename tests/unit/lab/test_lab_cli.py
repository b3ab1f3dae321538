"""mnistpipe.lab.cli: the lab's command lines read params.yaml through the schema and find MNIST through
--mnist or MNIST_MIRROR, with one-line errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnistpipe.errors import PipelineError
from mnistpipe.lab import bench, bench_tsne
from mnistpipe.lab.cli import mnist_source, read_params

PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"


def test_mnist_comes_from_the_flag_then_the_variable():
    assert mnist_source("/given", environ={"MNIST_MIRROR": "/env"}) == "/given"
    assert mnist_source(None, environ={"MNIST_MIRROR": "/env"}) == "/env"
    with pytest.raises(PipelineError, match=r"^no MNIST files given: pass --mnist DIR .* or set MNIST_MIRROR$"):
        mnist_source(None, environ={})


@pytest.mark.parametrize("main", [bench.main, bench_tsne.main])
def test_commands_without_mnist_name_the_flag_and_the_variable(main, monkeypatch):
    monkeypatch.delenv("MNIST_MIRROR", raising=False)
    with pytest.raises(PipelineError, match="--mnist DIR .* MNIST_MIRROR"):
        main(["--params", str(PARAMS)] if main is bench.main else [])


def test_params_are_read_through_the_schema(tmp_path):
    assert read_params(PARAMS).add_awgn.std > 0
    with pytest.raises(PipelineError, match="not found; pass --params"):
        read_params(tmp_path / "absent.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text(PARAMS.read_text().replace("\nseed: 0", "\nseed: -1", 1))
    with pytest.raises(PipelineError, match=r"params\.yaml.*seed"):
        read_params(bad)
