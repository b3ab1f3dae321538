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
from mnistpipe import datasets, evaluate, io, models, noise, plots, plots_template
from mnistpipe.errors import PipelineError
from mnistpipe.runner import run_stage

# The offline page of `dvc plots show`, which .dvc/config's plots.html_template names (relative to .dvc/).
PLOTS_TEMPLATE = Path("dvc_plots_template.html")
N_SAMPLES, N_DENOISED = 40, 10  # test images in samples.png; columns of denoising.png
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
    named = {"class_names": datasets.class_names(params.dataset)}  # every label a figure shows names its class
    y_train = load_split(TRAIN, producer="download", keys=("y_train",))["y_train"]
    test = load_split(TEST, producer="download")
    x, y, n = test["x_test"], test["y_test"], len(test["y_test"])
    sets = {"clean": x, "noisy": load_split(NOISY_TEST, producer="add_awgn")["x_test"],
            "denoised": load_split(DENOISED_TEST, producer="denoise")["x_test"]}
    k, i = p.tsne_size, p.sample_index
    if k > n:
        raise PipelineError(f"visualize.tsne_size={k} exceeds the {n} test images; set it to at most {n}")
    if p.perplexity >= k:
        raise PipelineError(f"visualize.perplexity={p.perplexity} must be below tsne_size={k}; lower it")
    if i >= n:
        raise PipelineError(f"visualize.sample_index={i} is out of range for {n} test images; use 0-{n - 1}")
    tuned = models.from_checkpoint(io.load_checkpoint(CHECKPOINTS["tuned"], kind="cnn", producer=PRODUCERS["tuned"]),
                                   path=str(CHECKPOINTS["tuned"]))
    scores = read_checked_json(METRICS / "evaluate.json", producer="evaluate", numbers=ACCURACIES)
    worst = io.read_json(METRICS / "evaluate" / "misclassified.json", producer="evaluate").get("tuned", [])
    saved = METRICS / "evaluate" / "confusion.json"
    conf = evaluate.checked_confusions(io.read_json(saved, producer="evaluate"), scores, source=str(saved))
    seconds = {s: _train_seconds(s) for _, stages in COMPARED.values() for s in stages}
    results = {label: {"accuracy": scores[m]["accuracy"], "seconds": {s: seconds[s] for s in stages}}
               for label, (m, stages) in COMPARED.items()}
    psnr = float(noise.psnr(sets["noisy"][i:i + 1], x[i:i + 1])[0])
    grid = {"original": x, "noisy": sets["noisy"], "denoised": sets["denoised"]}
    embedded = {name: plots.tsne_embed(s[:k], perplexity=p.perplexity, seed=params.seed, n_jobs=p.tsne_threads,
                                       method=p.tsne_method)
                for name, s in sets.items()}
    figures = {
        "label_distribution": plots.label_distribution(y_train, **named),
        "samples": plots.sample_grid(x[:N_SAMPLES], y[:N_SAMPLES], title="Test images", **named),
        "feature_maps_conv1": plots.feature_maps(tuned, x[i], block=1, label=int(y[i]), **named),
        "feature_maps_conv2": plots.feature_maps(tuned, x[i], block=2, label=int(y[i]), **named),
        "misclassified": plots.misclassified(x, worst, title="Tuned CNN: most confident errors", **named),
        "noisy_example": plots.noisy_example(x[i], sets["noisy"][i], label=int(y[i]), psnr_db=psnr, **named),
        "denoising": plots.denoising_grid({r: s[:N_DENOISED] for r, s in grid.items()}, labels=y, **named),
        "tsne": plots.tsne_figure(embedded, y[:k], **named),
        "comparison": plots.comparison(results, reference={lb: scores[r]["accuracy"] for lb, r in REFERENCE.items()},
                                       reference_label="clean-trained (tuned) model"),
        "confusion_matrices": plots.confusion_matrices(conf, **named),
    }
    for name, fig in figures.items():
        plots.save_png(fig, PLOTS / f"{name}.png")
    plots_template.write_template(PLOTS_TEMPLATE)


if __name__ == "__main__":
    run_stage(main)
