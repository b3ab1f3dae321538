"""Score every classifier on its test set (test labels are read only here and by `robustness`)."""

from pathlib import Path

from common import CHECKPOINTS, DENOISED_TEST, METRICS, NOISY_TEST, PRODUCERS, TEST, load_params, load_split
from mnistpipe import datasets, evaluate, io, models, tensors, tracking, train
from mnistpipe.runner import run_stage

TEST_SETS = {"clean": (TEST, "download"), "noisy": (NOISY_TEST, "add_awgn"), "denoised": (DENOISED_TEST, "denoise")}
# Result name -> (checkpoint, test set). The clean model on noisy/denoised images shows what denoising buys
# without retraining.
RUNS = {
    "baseline": ("baseline", "clean"),
    "tuned": ("tuned", "clean"),
    "noisy": ("noisy", "noisy"),
    "denoised": ("denoised", "denoised"),
    "tuned_on_noisy": ("tuned", "noisy"),
    "tuned_on_denoised": ("tuned", "denoised"),
}


def main() -> None:
    params = load_params()
    names = datasets.class_names(params.dataset)
    device = train.resolve_device(params.device)
    y = load_split(TEST, producer="download", keys=("y_test",))["y_test"]
    images = {}
    for name, (path, producer) in TEST_SETS.items():
        images[name] = load_split(path, producer=producer)["x_test"]
        tensors.check_counts({"x_test": images[name]}, {"y_test": y}, images_source=str(path),
                          labels_source=str(TEST), producer=producer)
    nets, summary, misclassified, confusion = {}, {}, {}, {}
    # A dvclive folder: each result's confusion rows (one per test image, what DVC's confusion template counts)
    # under plots/sklearn/, and beside them the reports, the worst errors and the matrices visualize draws.
    with tracking.live_log(METRICS / "evaluate") as live:
        out = Path(live.dir)
        for name, (ckpt_name, test_set) in RUNS.items():
            if ckpt_name not in nets:
                path = CHECKPOINTS[ckpt_name]
                ckpt = io.load_checkpoint(path, kind="cnn", producer=PRODUCERS[ckpt_name])
                nets[ckpt_name] = models.from_checkpoint(ckpt, path=str(path))
            logits = train.predict(nets[ckpt_name], images[test_set], device=device)
            result = evaluate.evaluate_predictions(y, logits, n_misclassified=params.evaluate.n_misclassified,
                                                   class_names=names)
            summary[name] = evaluate.summary(result)
            misclassified[name] = result["misclassified"]
            io.write_text(out / "reports" / f"{name}.txt", result["report_text"])
            io.write_json(out / "reports" / f"{name}.json", result["report"])
            confusion[name] = result["confusion"]
            live.log_sklearn_plot("confusion_matrix", y.tolist(), result["predicted"], name=name)
        io.write_json(out / "misclassified.json", misclassified)
        io.write_json(out / "confusion.json", confusion)
    io.write_json(METRICS / "evaluate.json", summary)


if __name__ == "__main__":
    run_stage(main)
