"""The benchmark entry point: runs without dvc/dvclive/optuna, and its tiny run produces a full table."""

import json
import subprocess
import sys
from pathlib import Path

from mnistpipe import bench

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


def test_bench_imports_no_pipeline_tools():
    code = ("import sys, mnistpipe.bench, mnistpipe.plots; "
            "bad = [m for m in ('dvc', 'dvclive', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_benchmark_run(tmp_path, monkeypatch, helpers):
    import os

    mirror = os.environ.get("MNIST_MIRROR") or str(MIRROR)
    helpers.need((Path(mirror) / "t10k-labels-idx1-ubyte.gz").exists(),
                 f"no MNIST mirror at {mirror}; set MNIST_MIRROR")
    out_json = tmp_path / "bench.json"
    out = bench.main(["--mnist", mirror, "--device", "cpu", "--train-size", "512", "--ref-epochs", "1",
                      "--epochs", "1", "--checks", "2", "--dae-size", "128", "--tsne-size", "60",
                      "--json", str(out_json)])
    saved = json.loads(out_json.read_text())
    assert saved["train_size"] == 512
    for part in ("reference", "project"):
        hist = out[part]["history"]
        assert out[part]["images_per_s"] > 0
        assert len(hist) == 2, "two probes per epoch"
        assert 0 < hist[0]["train_seconds"] < hist[1]["train_seconds"]
        assert all(0.0 <= h["test_acc"] <= 1.0 for h in hist)
    assert out["dae"]["images_per_s"] > 0 and out["tsne"]["n"] == 60
    table = bench.format_table(out)
    assert "seconds to 99.0% test acc" in table and "t-SNE of 60 images" in table


def test_table_reports_a_lower_bound_when_the_reference_misses_the_target():
    hist = [{"epoch": 1, "test_acc": 0.98, "train_seconds": 90.0}]
    out = {"device": "cpu", "threads": 2, "torch": "x", "train_size": 10,
           "reference": {"images_per_s": 100.0, "history": hist, "time_to_0.990": None, "time_to_0.992": None,
                         "time_to_0.994": None},
           "project": {"images_per_s": 1000.0, "history": [{"epoch": 1, "test_acc": 0.991, "train_seconds": 9.0}],
                       "time_to_0.990": 9.0, "time_to_0.992": None, "time_to_0.994": None}}
    table = bench.format_table(out)
    row = next(line for line in table.splitlines() if line.startswith("seconds to 99.0%"))
    assert row.split()[-1] == ">10.0x"
