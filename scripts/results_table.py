"""Regenerate README.md's results table from the committed metrics files: python scripts/results_table.py"""

import json
from pathlib import Path

from mnistpipe.report import replace_section, results_markdown

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


def main() -> None:
    metrics = {k: json.loads(Path(v).read_text()) for k, v in FILES.items() if Path(v).exists()}
    readme = Path("README.md")
    readme.write_text(replace_section(readme.read_text(), results_markdown(metrics)))
    print(results_markdown(metrics))


if __name__ == "__main__":
    main()
