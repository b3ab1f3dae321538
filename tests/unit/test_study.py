"""mnistpipe.study without the pipeline: the committed metrics in, Markdown and HTML out; conclusions follow the
numbers, a missing figure is said to be missing, and the page holds its figures as data URIs."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from mnistpipe import datasets, study
from mnistpipe.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
FILES = {"download": "download.json", "add_awgn": "add_awgn.json", "denoise": "denoise.json",
         "evaluate": "evaluate.json", "robustness": "robustness.json", "select_cnn": "select_cnn.json",
         **{s: f"{s}/metrics.json" for s in (*study.MODELS.values(), "train_dae")}}
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU\x00\x00\x00"
       b"\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")


def committed(**changes) -> dict:
    metrics = {k: json.loads((ROOT / "metrics" / v).read_text()) for k, v in FILES.items()}
    reports = {k: json.loads((ROOT / "metrics" / "evaluate" / "reports" / f"{k}.json").read_text())
               for k in study.MODELS}
    curves = {}
    for stage in study.MODELS.values():
        folder = ROOT / "metrics" / stage / "plots" / "metrics"
        curves[stage] = {c: [float(r[c]) for r in csv.DictReader((folder / f"{c}.tsv").open(), delimiter="\t")]
                         for c in study.CURVES}
    with (ROOT / "metrics" / "tune_cnn_trials.csv").open() as f:
        trials = list(csv.DictReader(f))
    kw = dict(dataset="mnist", class_names=datasets.class_names("mnist"),
              baseline_hyperparameters={"kernel_size": 3, "stride": 1, "dropout": 0.25, "lr": 0.003, "epochs": 4,
                                        "batch_size": 128},
              trials=trials, curves=curves, reports=reports, figures=dict.fromkeys(study.FIGURES, PNG))
    metrics = copy.deepcopy(metrics)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = metrics
        for part in path:
            node = node[part]
        node[last] = value
    return study.study_context(metrics, **kw)


def markdown(ctx) -> str:
    return " ".join(study.render_markdown(ctx, study.relative_figure("../plots/")).split())


def test_sections_in_order_and_figures_linked():
    text = study.render_markdown(committed(), study.relative_figure("../plots/"))
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == list(study.SECTIONS)
    for name in study.FIGURES:
        assert f"(../plots/{name}.png)" in text, name


def test_the_noisy_against_denoised_sentence_follows_the_errors():
    """Whichever way the committed run went, the sentence says so; changing the error counts flips it."""
    d = committed()["ev"]["denoised"]["n_errors"]
    beats = committed(evaluate__noisy__n_errors=d - 3)
    assert "the noisy-trained CNN beats the denoised-trained CNN by 3 test images" in markdown(beats)
    worse = committed(evaluate__noisy__n_errors=d + 3)
    assert "the noisy-trained CNN does not beat the denoised-trained CNN: it makes 3 more test errors" in (
        markdown(worse))
    tied = committed(evaluate__noisy__n_errors=d)
    assert f"the noisy-trained CNN and the denoised-trained CNN tie ({d} test errors each)" in markdown(tied)


def test_a_missing_figure_is_named_not_linked():
    ctx = committed()
    ctx["figures"]["tsne"] = False
    text = markdown(ctx)
    assert "(../plots/tsne.png)" not in text and "The figure `plots/tsne.png` was not drawn in this run." in text


def test_html_is_self_contained():
    page = study.render_html(committed(), dict.fromkeys(study.FIGURES, PNG))
    assert page.count('src="data:image/png;base64,') == len(study.FIGURES)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "<table>" in page and "<h2>Noise robustness</h2>" in page


def test_report_numbers_and_stale_reports():
    assert study.report_number("98.60%") == pytest.approx(0.986)
    assert study.report_number("98% (report table)") == pytest.approx(0.98)
    assert study.report_number("n/a") is None
    ctx_args = committed()
    assert ctx_args["original"]["tuned"]["test_value"] == pytest.approx(0.986)
    with pytest.raises(PipelineError, match="no row for class 'T-shirt/top'"):
        study._class_rows({"0": {}}, datasets.class_names("fashion-mnist"), "reports/x.json")


def test_the_committed_seed_grid_describes_the_current_baseline():
    """benchmarks/seed-grid-dropout.json was measured with today's params (GRID_KEYS) and today's baseline: the
    committed models/baseline.pt (dvc.lock) is byte for byte the one of the commit the grid names, so no change of
    code since then changed what train_baseline trains. When this fails, rerun the grid:
    `SUMMARY=benchmarks/seed-grid-dropout.json scripts/seed_grid.sh` from a committed, reproduced checkout."""
    import subprocess

    import yaml

    path = ROOT / "benchmarks" / "seed-grid-dropout.json"
    grid = json.loads(path.read_text())
    ctx = study.seed_grid_context(grid, run_params=yaml.safe_load((ROOT / "params.yaml").read_text()),
                                  source=str(path))
    assert ctx["differs"] == [], f"params changed since the grid: {ctx['differs']}"

    def baseline_md5(lock_text: str) -> str:
        outs = yaml.safe_load(lock_text)["stages"]["train_baseline"]["outs"]
        return next(o["md5"] for o in outs if o["path"] == "models/baseline.pt")

    then = subprocess.run(["git", "show", f"{grid['commit']}:dvc.lock"], cwd=ROOT, capture_output=True, text=True)
    assert then.returncode == 0, f"the grid's commit {grid['commit']} is not in this history: {then.stderr}"
    assert baseline_md5(then.stdout) == baseline_md5((ROOT / "dvc.lock").read_text()), \
        "train_baseline trains another network than at the grid's commit"
