"""The robustness stage's outputs in the reproduced tiny repository: they agree with each other and with evaluate.

Only reads files that the session's `tiny_repo` repro wrote (no stage run of its own).
"""

from __future__ import annotations

import csv
import json

METHODS = ["clean_cnn", "noisy_cnn", "dae_clean_cnn", "dae_denoised_cnn"]


def test_curve_metrics_and_figure_agree_with_params_and_evaluate(tiny_repo, helpers):
    stds = helpers.read_params(tiny_repo)["robustness"]["stds"]
    assert len(stds) >= 2 and 0.0 in stds, "the tiny run should measure std 0 and one noisy level"
    metrics = json.loads((tiny_repo / "metrics/robustness.json").read_text())
    assert list(metrics) == [f"std_{s:g}" for s in stds]
    with open(tiny_repo / "metrics/robustness_curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["std", *METHODS]
    assert [float(r["std"]) for r in rows] == stds
    for row, (key, group) in zip(rows, metrics.items(), strict=True):
        assert {m: float(row[m]) for m in METHODS} == {m: group[f"{m}_acc"] for m in METHODS}, key
        assert 0 < group["denoised_psnr_db"] < 100, key
    assert "noisy_psnr_db" not in metrics["std_0"]  # noise-free 8-bit images: infinite PSNR, left out
    assert all(0 < group["noisy_psnr_db"] < 100 for key, group in metrics.items() if key != "std_0")
    # At std 0 the images are the clean test set itself, so the clean CNN scores what evaluate measured for it.
    evaluate = json.loads((tiny_repo / "metrics/evaluate.json").read_text())
    assert metrics["std_0"]["clean_cnn_acc"] == evaluate["tuned"]["accuracy"]
    assert (tiny_repo / "plots/robustness.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
