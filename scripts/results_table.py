"""Regenerate README.md's results table from the committed metrics files: python scripts/results_table.py

`--check` changes nothing and exits with status 1 when the README's table differs from the metrics
(tests/unit/test_readme.py runs the same comparison).
"""

import argparse
import json
import sys
from pathlib import Path

from mnistpipe.report import END, START, replace_section, results_markdown

ROOT = Path(__file__).resolve().parent.parent
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
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} ... {END} section")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


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
    readme.write_text(replace_section(text, table))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
