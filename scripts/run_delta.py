"""What a change of the default pipeline bought: two committed full runs side by side, stage by stage.

    python scripts/run_delta.py BEFORE_COMMIT [AFTER_COMMIT] --json benchmarks/run-delta-YYYY-MM-DD.json

For each stage: its seconds in each run (from the newest benchmarks/repro-*.log of each commit) and the quality
measure it is judged by (read from that commit's metrics/), plus what changed in it, in words (CHANGES). AFTER
defaults to the working tree. scripts/results_md.py renders the JSON into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

# A sibling script: run as `python scripts/run_delta.py`, its folder is first on sys.path.
from results_md import parse_repro_log, reference_epochs

ROOT = Path(__file__).resolve().parent.parent

# Stage -> (metrics file, dotted key, what it measures): the one number each stage is judged by.
MEASURES = {
    "train_baseline": ("metrics/evaluate.json", "baseline.accuracy", "baseline test accuracy"),
    "tune_cnn": ("metrics/evaluate.json", "tuned.accuracy", "tuned test accuracy"),
    "train_on_noisy": ("metrics/evaluate.json", "noisy.accuracy", "noisy-trained test accuracy (noisy images)"),
    "train_dae": ("metrics/denoise.json", "test_psnr_denoised_db", "denoised test PSNR (dB)"),
    "train_on_denoised": ("metrics/evaluate.json", "denoised.accuracy",
                          "denoised-trained test accuracy (denoised images)"),
}
# What changed in each stage between the runs this script was made for (words only; the numbers are measured).
CHANGES = {
    "tune_cnn": "budget 30 passes (was 80), multivariate TPE + Hyperband (was independent TPE + median pruning), "
                "no enqueued baseline (select_cnn scores it); validation in 256-image NHWC batches",
    "select_cnn": "new: the baseline trained as a trial, beside the search's winner",
    "train_on_noisy": "3 epochs fine-tuning the tuned CNN instead of 10 from scratch",
    "train_dae": "width 12, 2 epochs, lr 0.006 (was width 8, 3 epochs, lr 0.003)",
    "denoise": "256-image NHWC batches (was 2,048 NCHW) and the wider autoencoder",
    "train_on_denoised": "3 epochs fine-tuning the tuned CNN instead of 10 from scratch",
    "robustness": "5 noise levels (was 9), 256-image NHWC batches (was 2,048 NCHW), the wider autoencoder",
    "evaluate": "256-image NHWC batches (was 2,048 NCHW)",
    "visualize": "t-SNE of 1,000 test images per set (was 2,000)",
}


def _read(commit: str | None, rel: str) -> str:
    if commit is None:
        return (ROOT / rel).read_text()
    return subprocess.run(["git", "show", f"{commit}:{rel}"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def _newest_log(commit: str | None) -> str:
    if commit is None:
        names = [p.name for p in (ROOT / "benchmarks").glob("repro-*.log")]
    else:
        names = [Path(n).name for n in subprocess.run(
            ["git", "ls-tree", "--name-only", commit, "benchmarks/"], cwd=ROOT, capture_output=True, text=True,
            check=True).stdout.split() if Path(n).name.startswith("repro-") and n.endswith(".log")]
    if not names:
        raise SystemExit(f"no benchmarks/repro-*.log at {commit or 'the working tree'}")
    return f"benchmarks/{sorted(names)[-1]}"


def _value(commit: str | None, rel: str, dotted: str) -> float | None:
    node = json.loads(_read(commit, rel))
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def run_summary(commit: str | None) -> dict:
    """A committed run's log name, wall clock, reference-epoch ratio, stage seconds and measures."""
    log = _newest_log(commit)
    rec = parse_repro_log(_read(commit, log))
    return {"commit": commit or "working tree", "log": log, "wall_seconds": rec["WALL_SECONDS"] and
            float(rec["WALL_SECONDS"]), "reference_epochs": reference_epochs(rec),
            "stages": {s: sec for s, sec, _ in rec["stages"]},
            "measures": {s: _value(commit, rel, key) for s, (rel, key, _) in MEASURES.items()}}


def delta(before: str, after: str | None) -> dict:
    """Both runs' summaries and one row per stage of either."""
    b, a = run_summary(before), run_summary(after)
    stages = list(dict.fromkeys([*a["stages"], *b["stages"]]))
    rows = [{"stage": s, "seconds_before": b["stages"].get(s), "seconds_after": a["stages"].get(s),
             "measure": MEASURES[s][2] if s in MEASURES else None,
             "before": b["measures"].get(s), "after": a["measures"].get(s), "change": CHANGES.get(s, "")}
            for s in stages]
    return {"before": b, "after": a, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after", nargs="?")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()
    args.json.write_text(json.dumps(delta(args.before, args.after), indent=2) + "\n")


if __name__ == "__main__":
    main()
