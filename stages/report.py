"""Write the study as a document from this run's metrics and figures: report/README.md and report/index.html."""

import csv
from pathlib import Path

from common import METRICS, PLOTS, load_params, read_checked_json
from mnistpipe import datasets, io, study
from mnistpipe.errors import PipelineError
from mnistpipe.params import Params
from mnistpipe.runner import run_stage

REPORT = Path("report")
# Metrics files by the stage that writes them (the training stages' summaries are <stage>/metrics.json).
FILES = {"download": "download.json", "add_awgn": "add_awgn.json", "denoise": "denoise.json",
         "evaluate": "evaluate.json", "robustness": "robustness.json", "select_cnn": "select_cnn.json",
         **{s: f"{s}/metrics.json" for s in (*study.MODELS.values(), "train_dae")}}
TRIALS = METRICS / "tune_cnn_trials.csv"
# A committed seed grid of dropout on/off (`SUMMARY=... scripts/seed_grid.sh`), if any.
SEED_GRID = Path("benchmarks/seed-grid-dropout.json")


def _curves(stage: str) -> dict[str, list[float]]:
    """The per-epoch columns dvclive wrote for `stage` (metrics/<stage>/plots/metrics/<name>.tsv)."""
    out = {}
    for name in study.CURVES:
        path = METRICS / stage / "plots" / "metrics" / f"{name}.tsv"
        try:
            rows = list(csv.DictReader(io.require(path, producer=stage).open(), delimiter="\t"))
            out[name] = [float(r[name]) for r in rows]
        except (KeyError, ValueError, TypeError):
            raise PipelineError(f"{path} is not a dvclive table of {name}; rerun `dvc repro {stage}`") from None
    return out


def _seed_grid(params: Params) -> dict | None:
    """The committed seed grid beside the params of this run that shape a baseline (study.GRID_KEYS), if any."""
    if not SEED_GRID.is_file():
        return None
    grid = io.read_json(SEED_GRID, producer="scripts/seed_grid.sh")
    shaping = {"dataset": params.dataset, **params.baseline(), "recipe": params.recipe.model_dump(mode="json"),
               "download": {"val_size": params.download.val_size, "train_limit": params.download.train_limit}}
    return study.seed_grid_context(grid, run_params=shaping, source=str(SEED_GRID))


def main() -> None:
    params = load_params()
    metrics = {stage: read_checked_json(METRICS / rel, producer=stage) for stage, rel in FILES.items()}
    reports = {name: io.read_json(METRICS / "evaluate" / "reports" / f"{name}.json", producer="evaluate")
               for name in study.MODELS}
    with io.require(TRIALS, producer="tune_cnn").open(newline="") as f:
        trials = list(csv.DictReader(f))
    figures = {name: (PLOTS / f"{name}.png").read_bytes() for name in study.FIGURES
               if (PLOTS / f"{name}.png").is_file()}
    context = study.study_context(
        metrics, dataset=params.dataset, class_names=datasets.class_names(params.dataset),
        baseline_hyperparameters=params.baseline(), trials=trials,
        curves={stage: _curves(stage) for stage in study.MODELS.values()}, reports=reports, figures=figures,
        seed_grid=_seed_grid(params))
    io.write_text(REPORT / "README.md", study.render_markdown(context, study.relative_figure(f"../{PLOTS}/")))
    io.write_text(REPORT / "index.html", study.render_html(context, figures))


if __name__ == "__main__":
    run_stage(main)
