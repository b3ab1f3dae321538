"""Score every classifier on its test set; the only stage that reads the test labels."""

import json

from common import CHECKPOINTS, DENOISED_TEST, METRICS, NOISY_TEST, PLOTS, PRODUCERS, TEST, load_params, load_split
from mnistpipe import datasets, evaluate, io, models, tensors, train
from mnistpipe.errors import run_stage
from mnistpipe.params import section

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
    p = section(params := load_params(), "evaluate")
    names = datasets.class_names(params.dataset)
    device = train.resolve_device(p["device"])
    y = load_split(TEST, producer="download", keys=("y_test",))["y_test"]
    images = {}
    for name, (path, producer) in TEST_SETS.items():
        images[name] = load_split(path, producer=producer)["x_test"]
        tensors.check_counts({"x_test": images[name]}, {"y_test": y}, images_source=str(path),
                          labels_source=str(TEST), producer=producer)
    nets = {}
    summary, misclassified = {}, {}
    with io.atomic_dir(METRICS / "evaluate") as out, io.atomic_dir(PLOTS / "confusion") as plots:
        for name, (ckpt_name, test_set) in RUNS.items():
            if ckpt_name not in nets:
                path = CHECKPOINTS[ckpt_name]
                ckpt = io.load_checkpoint(path, kind="cnn", producer=PRODUCERS[ckpt_name])
                nets[ckpt_name] = models.from_checkpoint(ckpt, path=str(path))
            logits = train.predict(nets[ckpt_name], images[test_set], device=device)
            result = evaluate.evaluate_predictions(y, logits, n_misclassified=p["n_misclassified"], class_names=names)
            summary[name] = evaluate.summary(result)
            misclassified[name] = result["misclassified"]
            io.write_text(out / "reports" / f"{name}.txt", result["report_text"])
            io.write_json(out / "reports" / f"{name}.json", result["report"])
            rows = evaluate.confusion_rows(y, logits)
            # One row per line: a tenth of write_json's size for 10,000 rows, and still readable in a diff.
            io.write_text(plots / f"{name}.json", "[\n" + ",\n".join(map(json.dumps, rows)) + "\n]\n")
        io.write_json(out / "misclassified.json", misclassified)
    io.write_json(METRICS / "evaluate.json", summary)


if __name__ == "__main__":
    run_stage(main)
