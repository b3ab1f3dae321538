"""Regenerate README.md's results table from the committed metrics files: python scripts/results_table.py

The table (`results_markdown`) is generated from the metrics files, never typed by hand, and sits between
README.md's `<!-- results:start -->` / `<!-- results:end -->` markers. `--check` changes nothing and exits with
status 1 when the README's table differs from the metrics (tests/unit/test_readme.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnistpipe.lab.markers import between, replace_between

ROOT = Path(__file__).resolve().parent.parent
BLOCK = "results"  # README.md's <!-- results:start --> ... <!-- results:end -->

# Numbers stated in the seed report ("CNNs and AutoEncoders" on MNIST), quoted for comparison.
REPORT = {
    "baseline": {"test": "98% (report table)", "val": "98.16% (epoch 5)", "time": "≈261 s (5 epochs)"},
    "tuned": {"test": "98.60%", "val": "99.10% (best epoch)", "time": "n/a"},
    "noisy": {"test": "98% (report table)", "val": "97.57%", "time": "≈475 s (5 epochs)"},
    "denoised": {"test": "99% (report table)", "val": "n/a", "time": "n/a"},
}
ROWS = [  # (label, evaluate.json key, training metrics key, report key)
    ("Baseline CNN, clean test", "baseline", "train_baseline", "baseline"),
    ("Tuned CNN, clean test", "tuned", "tune_cnn", "tuned"),
    ("Noisy-trained CNN, noisy test", "noisy", "train_on_noisy", "noisy"),
    ("Denoised-trained CNN, denoised test", "denoised", "train_on_denoised", "denoised"),
    ("Tuned (clean) CNN, noisy test", "tuned_on_noisy", None, None),
    ("Tuned (clean) CNN, denoised test", "tuned_on_denoised", None, None),
]


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def results_markdown(metrics: dict) -> str:
    """Markdown tables from a dict of metrics files keyed by stage ('evaluate', 'train_baseline', ...)."""
    ev = metrics.get("evaluate", {})
    lines = [
        "| model | test accuracy (ours) | val accuracy (ours) | training time (ours) | report test | report val |"
        " report time |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key, train_key, rep in ROWS:
        tr = metrics.get(train_key, {}) if train_key else {}
        r = REPORT.get(rep, {}) if rep else {}
        secs, epochs = tr.get("train_seconds"), tr.get("epochs")
        time = f"{secs:.0f} s ({epochs} epochs)" if secs is not None else "–"
        lines.append(
            f"| {label} | {_pct(ev.get(key, {}).get('accuracy'))} | {_pct(tr.get('val_acc')) if tr else '–'} | "
            f"{time} | {r.get('test', '–')} | {r.get('val', '–')} | {r.get('time', '–')} |"
        )
    dn, dae, noise = metrics.get("denoise", {}), metrics.get("train_dae", {}), metrics.get("add_awgn", {})
    tune = metrics.get("tune_cnn", {})
    lines += [
        "",
        "| denoising | value |",
        "|---|---|",
        f"| AWGN std | {noise.get('std', '–')} |",
        f"| noisy test PSNR / SSIM | {dn.get('test_psnr_noisy_db', float('nan')):.2f} dB / "
        f"{dn.get('test_ssim_noisy', float('nan')):.3f} |",
        f"| denoised test PSNR / SSIM | {dn.get('test_psnr_denoised_db', float('nan')):.2f} dB / "
        f"{dn.get('test_ssim_denoised', float('nan')):.3f} |",
        f"| autoencoder training time | {dae.get('train_seconds', float('nan')):.0f} s "
        f"({dae.get('epochs', '–')} epochs on {dae.get('train_images', '–')} images) |",
        "",
        *tuning_rows(tune, metrics.get("train_baseline", {})),
    ]
    return "\n".join(lines)


def _points(a, b) -> str:
    return "–" if a is None or b is None else f"{100 * (a - b):+.2f} points"


def tuning_rows(tune: dict, baseline: dict) -> list[str]:
    """The tuning table: the search objective of the enqueued baseline trial vs the best trial, then the retrained
    tuned CNN vs the baseline CNN (same recipe, so the difference is the six hyperparameters')."""
    best, base = tune.get("best_trial_val_acc"), tune.get("baseline_trial_val_acc")
    number = tune.get("best_trial")
    which = "–" if number is None else f"#{number}" + (" (the baseline)" if tune.get("winner_is_baseline") else "")
    tuned_val, base_val = tune.get("val_acc"), baseline.get("val_acc")
    used = tune.get("budget_used")
    pruned = tune.get("n_pruned")
    return [
        "| tuning (baseline and tuned CNN share one recipe) | value |",
        "|---|---|",
        f"| search objective (val accuracy after training on the trial subset): baseline trial vs best trial | "
        f"{_pct(base)} vs {_pct(best)} (trial {which}; {_points(best, base)}) |",
        f"| retrained on the whole training split (val accuracy): tuned vs baseline | {_pct(tuned_val)} vs "
        f"{_pct(base_val)} ({_points(tuned_val, base_val)}) |",
        f"| tuning search time | {tune.get('search_seconds', float('nan')):.0f} s ({tune.get('n_trials', '–')} "
        f"trials{'' if pruned is None else f', {pruned} pruned'}"
        f"{'' if used is None else f'; {used:,} training images'}) |",
    ]


FILES = {
    "evaluate": "metrics/evaluate.json",
    "add_awgn": "metrics/add_awgn.json",
    "denoise": "metrics/denoise.json",
    "train_baseline": "metrics/train_baseline/metrics.json",
    "tune_cnn": "metrics/tune_cnn/metrics.json",
    "train_on_noisy": "metrics/train_on_noisy/metrics.json",
    "train_dae": "metrics/train_dae/metrics.json",
    "train_on_denoised": "metrics/train_on_denoised/metrics.json",
}


def read_metrics(root: Path = ROOT) -> dict:
    """The metrics files under `root` that exist, parsed, by stage."""
    return {k: json.loads((root / v).read_text()) for k, v in FILES.items() if (root / v).exists()}


def readme_table(text: str) -> str:
    """The text between the README's results markers, without the newlines next to them."""
    return between(text, BLOCK, where="README.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if the README is stale")
    args = parser.parse_args(argv)
    table = results_markdown(read_metrics())
    readme = ROOT / "README.md"
    text = readme.read_text()
    if args.check:
        if readme_table(text) != table:
            print("README.md's results table differs from metrics/; run python scripts/results_table.py",
                  file=sys.stderr)
            return 1
        return 0
    readme.write_text(replace_between(text, BLOCK, table, where="README.md"))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
