"""Rewrite README.md's pipeline block from the live `dvc dag --md`: python scripts/readme_dag.py [--check]

The block between `<!-- dag:start -->` and `<!-- dag:end -->` is the Mermaid graph exactly as `dvc dag --md`
prints it for the repository's dvc.yaml, then one line per stage in dvc.yaml's order (the line's text is
DESCRIPTIONS below; a stage without one is an error, so a new stage cannot slip into the graph undescribed).
`--check` changes nothing and exits with status 1 when README's block differs (tests/unit/test_readme.py runs the
same comparison).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- dag:start -->", "<!-- dag:end -->"
DESCRIPTIONS = {
    "validate_params": "checks all of params.yaml (it depends on the whole file, so a typo fails the next repro)",
    "download": "the dataset from a mirror list, MD5-verified, split into train/val (seeded) and test",
    "add_awgn": "Gaussian noise (AWGN), clipped to the pixel range and stored as images again",
    "train_baseline": "the baseline CNN from the six top-level hyperparameters and the shared recipe",
    "tune_cnn": "Optuna over the six (seeded TPE, pruning, fixed budget); the best trial retrained on all images",
    "select_cnn": "the tuned CNN: the search's winner or the baseline, whichever scores higher on its objective",
    "train_on_noisy": "the tuned CNN fine-tuned on the noisy images",
    "train_dae": "the convolutional denoising autoencoder",
    "denoise": "the autoencoder applied to the noisy images; PSNR and SSIM before and after",
    "train_on_denoised": "the tuned CNN fine-tuned on the denoised images",
    "evaluate": "every model on its test set: accuracy, classification reports, confusion matrices",
    "robustness": "test accuracy against noise std for four ways to classify noisy images",
    "visualize": "the study's figures as PNG files under plots/",
    "report": "the study as a document: report/README.md and a self-contained report/index.html",
}


def dvc_dag_md(root: Path = ROOT) -> str:
    """What `dvc dag --md` prints in `root`, without surrounding blank lines."""
    proc = subprocess.run([sys.executable, "-m", "dvc", "dag", "--md"], cwd=root, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"`dvc dag --md` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip("\n")


def block(dag_md: str, stages: list[str]) -> str:
    """The README block: the Mermaid graph, then one line per stage."""
    in_graph = set(re.findall(r'node\d+\["([^"]+)"\]', dag_md))
    if in_graph != set(stages):
        raise SystemExit(f"`dvc dag --md` shows {sorted(in_graph)} but dvc.yaml has {sorted(stages)}")
    missing = [s for s in stages if s not in DESCRIPTIONS]
    if missing:
        raise SystemExit(f"no description for stage(s) {', '.join(missing)}: add them to DESCRIPTIONS in {__file__}")
    width = max(map(len, stages))
    lines = [f"{s:<{width}}  {DESCRIPTIONS[s]}" for s in stages]
    return dag_md + "\n\n```\n" + "\n".join(lines) + "\n```"


def generated(root: Path = ROOT) -> str:
    stages = list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    return block(dvc_dag_md(root), stages)


def readme_block(text: str) -> str:
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"README.md needs one {START} and one {END}")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if README's block is stale")
    args = parser.parse_args(argv)
    readme = ROOT / "README.md"
    text, new = readme.read_text(), generated(ROOT)
    if args.check:
        if readme_block(text) != new:
            print("README.md's pipeline block differs from `dvc dag --md`; run python scripts/readme_dag.py",
                  file=sys.stderr)
            return 1
        return 0
    readme_block(text)
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{new}\n{END}", text,
                             flags=re.S))
    print("wrote README.md's pipeline block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
