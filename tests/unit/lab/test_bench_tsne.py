"""The t-SNE comparison: the winner rule, the tables, openTSNE missing, and one real run (two methods, tiny n)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import get_args

import numpy as np
import pytest

from mnistpipe import plots
from mnistpipe.errors import PipelineError
from mnistpipe.lab import bench_tsne
from mnistpipe.lab.bench_tsne import REFERENCE_METHOD, TOLERANCE
from mnistpipe.params import Visualize


def result(**methods) -> dict:
    """A run()-shaped result: method=(seconds, trustworthiness) or method="why unavailable"."""
    rows = {m.replace("_", "-").replace("pca50-", "pca50+"): ({"unavailable": v} if isinstance(v, str) else
                                                              {"seconds": v[0], "trustworthiness": v[1]})
            for m, v in methods.items()}
    ref = rows.get(REFERENCE_METHOD, {}).get("seconds")
    for r in rows.values():
        if ref and "seconds" in r:
            r["speedup"] = ref / r["seconds"]
    return {"n": 100, "threads": 2, "seed": 0, "perplexity": 30.0, "max_iter": 500, "trust_neighbors": 10,
            "trust_size": 100, "methods": rows}


def images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_pick_fastest_within_tolerance():
    r = result(sklearn_bh_raw=(20.0, 0.960), pca50_sklearn_bh=(10.0, 0.962), pca50_opentsne_bh=(4.0, 0.958),
               opentsne_fft_raw=(2.0, 0.950))
    # 2 s loses 0.010 (> TOLERANCE) and is out; 4 s loses 0.002 and wins although 10 s scores higher.
    assert bench_tsne.pick(r) == "pca50+opentsne-bh"
    assert bench_tsne.pick(r, tolerance=0.011) == "opentsne-fft-raw"
    assert bench_tsne.pick(r, tolerance=0.0) == "pca50+sklearn-bh"


def test_pick_falls_back_to_the_reference_and_skips_unavailable():
    r = result(sklearn_bh_raw=(20.0, 0.960), pca50_sklearn_bh=(10.0, 0.960 - TOLERANCE - 1e-3),
               opentsne_fft_raw="openTSNE is not installed")
    assert bench_tsne.pick(r) == REFERENCE_METHOD
    exactly_at_floor = result(sklearn_bh_raw=(20.0, 0.5), opentsne_bh_raw=(1.0, 0.5 - TOLERANCE / 2))
    assert bench_tsne.pick(exactly_at_floor) == "opentsne-bh-raw"
    with pytest.raises(PipelineError, match=REFERENCE_METHOD):
        bench_tsne.pick(result(opentsne_bh_raw=(1.0, 0.9)))


def test_tables_name_every_method_speed_and_winner():
    r = result(sklearn_bh_raw=(20.0, 0.9601), pca50_opentsne_bh=(5.0, 0.9650), opentsne_fft_raw="no openTSNE")
    text = bench_tsne.format_table(r)
    lines = text.splitlines()
    assert len(lines) == 1 + 1 + 3  # caption, header, one line per method
    assert "pca50+opentsne-bh" in lines[3] and "4.00x" in lines[3] and "0.9650" in lines[3]
    assert lines[3].rstrip().endswith("winner") and "winner" not in lines[2]
    assert "1.00x" in lines[2] and "unavailable: no openTSNE" in lines[4]
    md = bench_tsne.format_markdown(r)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 1 + 3 and rows[1].startswith("| --- |")
    assert all(m in md for m in ("sklearn-bh-raw", "pca50+opentsne-bh", "opentsne-fft-raw", "winner", "4.00x"))


def test_missing_opentsne_is_reported_not_raised(monkeypatch):
    real = bench_tsne.importlib.util.find_spec
    monkeypatch.setattr(bench_tsne.importlib.util, "find_spec", lambda name: None if name == "openTSNE" else real(name))
    assert bench_tsne.available("sklearn-bh-raw") is None
    assert "openTSNE" in bench_tsne.available("opentsne-fft-raw")
    x = images(40)
    out = bench_tsne.run(x, methods=["opentsne-fft-raw", "pca50+opentsne-bh"], perplexity=5, trust_neighbors=3)
    assert out["methods"] == {m: {"unavailable": "openTSNE is not installed (pip install openTSNE)"}
                              for m in ("opentsne-fft-raw", "pca50+opentsne-bh")}
    assert "unavailable" in bench_tsne.format_table(out)


def test_run_rejects_bad_arguments():
    x = images(40)
    with pytest.raises(PipelineError, match="unknown t-SNE method"):
        bench_tsne.run(x, methods=["umap"])
    with pytest.raises(PipelineError, match="no t-SNE method"):
        bench_tsne.run(x, methods=[])
    with pytest.raises(PipelineError, match="trust_neighbors"):
        bench_tsne.run(x, methods=[REFERENCE_METHOD], trust_neighbors=20)
    with pytest.raises(PipelineError, match="trust_size=0"):
        bench_tsne.run(x, methods=[REFERENCE_METHOD], trust_size=0)
    with pytest.raises(PipelineError, match="--n"):
        bench_tsne.main(["--mnist", "/nonexistent", "--n", "1"])


def test_params_choices_are_the_methods():
    assert get_args(Visualize.model_fields["tsne_method"].annotation) == plots.TSNE_METHODS


def test_cli_times_scores_and_picks_on_real_mnist(mnist_dir, tmp_path):
    """Two methods on 300 real test images, each in its own process: times, trustworthiness, JSON and winner."""
    out = tmp_path / "out" / "tsne.json"
    methods = f"{REFERENCE_METHOD},pca50+opentsne-bh"
    proc = subprocess.run([sys.executable, "-m", "mnistpipe.lab.bench_tsne", "--mnist", str(mnist_dir), "--n", "300",
                           "--threads", "1", "--methods", methods, "--trust-size", "200", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert (r["n"], r["threads"], r["trust_size"], r["trust_neighbors"]) == (300, 1, 200, bench_tsne.TRUST_NEIGHBORS)
    assert list(r["methods"]) == methods.split(",")
    for m in r["methods"].values():
        assert m["seconds"] > 0
        # Real digits embed far better than chance (about 0.5): a broken embedding or score would fail here.
        assert 0.8 < m["trustworthiness"] <= 1.0
    assert r["methods"][REFERENCE_METHOD]["speedup"] == 1.0
    assert r["winner"] == bench_tsne.pick(r)
    assert all(m in proc.stdout for m in methods.split(",")) and "winner" in proc.stdout
