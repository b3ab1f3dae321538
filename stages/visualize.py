"""Draw the report's figures from the data, the tuned CNN and the evaluate stage's results (labels only colour), and
the offline page template that `dvc plots show` renders them with."""

from pathlib import Path

from common import (
    CHECKPOINTS,
    DENOISED_TEST,
    METRICS,
    NOISY_TEST,
    PLOTS,
    PRODUCERS,
    TEST,
    TRAIN,
    load_params,
    load_split,
    read_checked_json,
)
from mnistpipe import datasets, evaluate, io, models, plots, plots_template
from mnistpipe.runner import run_stage

# The offline page of `dvc plots show`, which .dvc/config's plots.html_template names (relative to .dvc/).
PLOTS_TEMPLATE = Path("dvc_plots_template.html")
# Comparison bars: label -> (evaluate result, training stages whose train_seconds add up to its cost).
COMPARED = {"clean": ("tuned", ["tune_cnn"]), "noisy": ("noisy", ["train_on_noisy"]),
            "denoised": ("denoised", ["train_on_denoised", "train_dae"])}
REFERENCE = {"noisy": "tuned_on_noisy", "denoised": "tuned_on_denoised"}
ACCURACIES = tuple(f"{m}.accuracy" for m in [*(m for m, _ in COMPARED.values()), *REFERENCE.values()])


def _train_seconds(stage: str) -> float:
    summary = read_checked_json(METRICS / stage / "metrics.json", producer=stage, numbers=("train_seconds",))
    return float(summary["train_seconds"])


def main() -> None:
    params = load_params()
    p = params.visualize
    y_train = load_split(TRAIN, producer="download", keys=("y_train",))["y_train"]
    test = load_split(TEST, producer="download")
    tuned = models.from_checkpoint(io.load_checkpoint(CHECKPOINTS["tuned"], kind="cnn", producer=PRODUCERS["tuned"]),
                                   path=str(CHECKPOINTS["tuned"]))
    scores = read_checked_json(METRICS / "evaluate.json", producer="evaluate", numbers=ACCURACIES)
    worst = io.read_json(METRICS / "evaluate" / "misclassified.json", producer="evaluate").get("tuned", [])
    saved = METRICS / "evaluate" / "confusion.json"
    conf = evaluate.checked_confusions(io.read_json(saved, producer="evaluate"), scores, source=str(saved))
    seconds = {s: _train_seconds(s) for _, stages in COMPARED.values() for s in stages}
    results = {label: {"accuracy": scores[m]["accuracy"], "seconds": {s: seconds[s] for s in stages}}
               for label, (m, stages) in COMPARED.items()}
    noisy = load_split(NOISY_TEST, producer="add_awgn")["x_test"]
    denoised = load_split(DENOISED_TEST, producer="denoise")["x_test"]
    figures = plots.study_figures(
        x=test["x_test"], y=test["y_test"], y_train=y_train, noisy=noisy, denoised=denoised, tuned=tuned, worst=worst,
        confusions=conf,
        results=results, reference={lb: scores[r]["accuracy"] for lb, r in REFERENCE.items()},
        sample_index=p.sample_index, tsne_size=p.tsne_size, perplexity=p.perplexity, seed=params.seed,
        tsne_threads=p.tsne_threads, tsne_method=p.tsne_method, class_names=datasets.class_names(params.dataset))
    for name, fig in figures.items():
        plots.save_png(fig, PLOTS / f"{name}.png")
    plots_template.write_template(PLOTS_TEMPLATE)


if __name__ == "__main__":
    run_stage(main)
