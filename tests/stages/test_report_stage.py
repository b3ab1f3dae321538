"""The `report` stage on the tiny pipeline: `python stages/report.py` in a copy of the reproduced repository writes
report/README.md and report/index.html whose numbers are the metrics' and whose conclusions follow them.

The stage is run directly (not through dvc) so these tests hold before and after it is added to dvc.yaml.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mnistpipe import datasets, study

FASHION = datasets.class_names("fashion-mnist")


def run_report(repo: Path, helpers) -> str:
    rc, out, err = helpers.run_stage(repo, "report", timeout=300)
    assert rc == 0, f"the report stage failed ({rc}):\n{out[-2000:]}\n{err[-3000:]}"
    assert (repo / "report" / "index.html").is_file()
    return (repo / "report" / "README.md").read_text(encoding="utf-8")


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def section(text: str, title: str) -> str:
    """The Markdown of one `## title` section."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert found, f"no section {title!r} in report/README.md"
    return found.group(1)


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every Markdown table row of `text` whose first cell is `first_cell`."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == first_cell:
                rows.append(cells)
    return rows


def metrics_of(repo: Path, rel: str) -> dict:
    return json.loads((repo / "metrics" / rel).read_text())


def test_report_stage_writes_both_files_with_the_numbers_of_the_metrics(repo_copy, helpers):
    text = run_report(repo_copy, helpers)
    assert [m for m in re.findall(r"^## (.+)$", text, re.M)] == list(study.SECTIONS)
    ev = metrics_of(repo_copy, "evaluate.json")
    table = section(text, "Accuracy and training time")
    for label, test_set, key in [("baseline CNN", "clean", "baseline"), ("tuned CNN", "clean", "tuned"),
                                 ("noisy-trained CNN", "noisy", "noisy"),
                                 ("denoised-trained CNN", "denoised", "denoised"),
                                 ("clean-trained (tuned) CNN", "noisy", "tuned_on_noisy")]:
        row = next(r for r in table_rows(table, label) if r[1] == test_set)
        assert row[2] == pct(ev[key]["accuracy"]) and row[3] == str(ev[key]["n_errors"]), (key, row)
    seconds = metrics_of(repo_copy, "train_baseline/metrics.json")["train_seconds"]
    assert table_rows(table, "baseline CNN")[0][4] == f"{seconds:.1f}"
    # The data exploration counts are download.json's.
    counts = metrics_of(repo_copy, "download.json")["train_label_counts"]
    explored = section(text, "Data exploration")
    assert [int(table_rows(explored, str(d))[0][1]) for d in range(10)] == counts
    # The robustness table is robustness.json, row by row, bold where a method is best.
    rob = metrics_of(repo_copy, "robustness.json")
    robust = section(text, "Noise robustness")
    for key, row in rob.items():
        cells = table_rows(robust, f"{float(key.removeprefix('std_')):g}")[0][1:]
        assert [c.strip("*") for c in cells] == [pct(row[f"{m}_acc"]) for m in study.ROBUSTNESS], (key, cells)
        best = max(row[f"{m}_acc"] for m in study.ROBUSTNESS)
        assert [c.startswith("**") for c in cells] == [row[f"{m}_acc"] == best for m in study.ROBUSTNESS]
    dn = metrics_of(repo_copy, "denoise.json")
    ae = table_rows(section(text, "The denoising autoencoder"), "denoised")[0]
    assert ae[1:] == [f"{dn['test_psnr_denoised_db']:.2f}", f"{dn['test_ssim_denoised']:.3f}"]
    # Every figure link points at a PNG that exists, relative to report/.
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all((repo_copy / "report" / link).resolve().is_file() for link in links), links
    # The original report's numbers are quoted from mnistpipe.study.REPORT, not retyped.
    from mnistpipe.study import REPORT
    beside = section(text, "The original report's numbers beside ours")
    assert table_rows(beside, "tuned CNN")[0][2] == REPORT["tuned"]["test"]
    # The committed seed grid was measured on the full data with the full recipe, not with the tiny copy's params.
    dropout = " ".join(section(text, "Dropout on and off").split())
    assert "The grid does not describe this run" in dropout and "download.val_size = 5000 (this run: " in dropout


def test_conclusions_follow_the_metrics(repo_copy, helpers):
    """Make the tuned CNN worse than the baseline, the autoencoder worse than no autoencoder: the sentences flip."""
    before = run_report(repo_copy, helpers)
    path = repo_copy / "metrics" / "evaluate.json"
    ev = json.loads(path.read_text())
    base = ev["baseline"]
    for name, errors in (("tuned", base["n_errors"] + 7), ("baseline", base["n_errors"])):
        ev[name]["n_errors"] = errors
        ev[name]["accuracy"] = 1 - errors / 200
    path.write_text(json.dumps(ev))
    dn_path = repo_copy / "metrics" / "denoise.json"
    dn = json.loads(dn_path.read_text())
    dn["test_psnr_denoised_db"] = dn["test_psnr_noisy_db"] - 1
    dn_path.write_text(json.dumps(dn))
    after = run_report(repo_copy, helpers)
    said = "the tuned CNN does not beat the baseline: it makes 7 more test errors"
    assert said in " ".join(after.split()), section(after, "Hyperparameter tuning")
    assert said not in " ".join(before.split())
    assert "The autoencoder does not raise the test PSNR" in after
    assert f"{pct(1 - (base['n_errors'] + 7) / 200)} against" in " ".join(after.split())
    # ... and the HTML says the same.
    page = (repo_copy / "report" / "index.html").read_text()
    assert "does not beat the baseline" in " ".join(page.split())


def test_fashion_mnist_names_its_classes(repo_copy, helpers):
    """dataset: fashion-mnist, with the classification reports evaluate writes for it (keyed by class name): the
    class names appear; reports of the other dataset are refused with one line."""
    helpers.set_param(repo_copy, "dataset", "fashion-mnist")
    rc, _, err = helpers.run_stage(repo_copy, "report")
    assert rc == 2
    helpers.one_line_error(err, "T-shirt/top", "rerun evaluate")
    reports = repo_copy / "metrics" / "evaluate" / "reports"
    for path in reports.glob("*.json"):
        report = json.loads(path.read_text())
        path.write_text(json.dumps({(FASHION[int(k)] if k.isdigit() else k): v for k, v in report.items()}))
    text = run_report(repo_copy, helpers)
    assert text.startswith("# CNNs and autoencoders on fashion-mnist")
    for name in FASHION:
        assert table_rows(section(text, "Data exploration"), name), name
        assert table_rows(section(text, "Accuracy and training time"), name), name
    assert "its numbers are for MNIST, not for fashion-mnist" in " ".join(text.split())
    assert "Ankle boot" in (repo_copy / "report" / "index.html").read_text()


def _seed_grid(shared: dict) -> dict:
    """A dropout grid as `python -m mnistpipe.lab.seedgrid --summary` writes it, of experiments sharing `shared`."""
    def setting(dropout, values):
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        return {"params": {"dropout": dropout}, "seeds": [0, 1, 2], "values": values, "n": 3, "mean": mean,
                "std": std}
    return {"commit": "0123456789abcdef", "metric": "metrics/train_baseline/metrics.json:val_acc",
            "shared_params": shared,
            "settings": [setting(0, [0.990, 0.991, 0.992]), setting(0.25, [0.990, 0.992, 0.991])],
            "welch": [{"delta": 0.0, "se": 0.00082, "t": 0.0, "df": 4.0, "p": 1.0}], "alpha": 0.05, "left_out": []}


def test_a_committed_seed_grid_is_shown(repo_copy, helpers):
    """The grid's table, its commit and Welch's verdict; whether it describes this run follows the params."""
    grid = repo_copy / "benchmarks" / "seed-grid-dropout.json"
    grid.parent.mkdir(exist_ok=True)
    run_params = study.flatten(helpers.read_params(repo_copy))
    grid.write_text(json.dumps(_seed_grid(run_params)))
    dropout = " ".join(section(run_report(repo_copy, helpers), "Dropout on and off").split())
    assert "not available" not in dropout and "commit `0123456789ab`" in dropout
    assert "| 0.25 | 3 | 0, 1, 2 | 99.10 % ± 0.10 % |" in dropout and "within the seed-to-seed spread" in dropout
    assert "does not describe this run" not in dropout
    grid.write_text(json.dumps(_seed_grid({**run_params, "recipe.hidden": 7})))
    dropout = " ".join(section(run_report(repo_copy, helpers), "Dropout on and off").split())
    assert "does not describe this run" in dropout and "recipe.hidden = 7 (this run: " in dropout
