"""scripts/results_table.py's tuning table: the search objective of the enqueued baseline trial beside the best
trial's, and the retrained tuned CNN beside the baseline CNN (one recipe, so the difference is the six
hyperparameters')."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "results_table.py"
_spec = importlib.util.spec_from_file_location("results_table", SCRIPT)
results_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_table)
results_markdown = results_table.results_markdown

TUNE = {"val_acc": 0.9941, "best_trial_val_acc": 0.9862, "baseline_trial_val_acc": 0.9850, "best_trial": 7,
        "winner_is_baseline": False, "search_seconds": 91.4, "n_trials": 25, "n_pruned": 6, "budget_used": 812000}


def tuning_table(metrics: dict) -> list[str]:
    lines = results_markdown(metrics).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| tuning "))
    return lines[start:]


def test_tuning_rows_compare_baseline_and_best_trial_and_the_retrains():
    rows = tuning_table({"tune_cnn": TUNE, "train_baseline": {"val_acc": 0.9932}})
    assert rows[0] == "| tuning (baseline and tuned CNN share one recipe) | value |" and rows[1] == "|---|---|"
    assert rows[2].endswith("| 98.50% vs 98.62% (trial #7; +0.12 points) |"), rows[2]
    assert rows[3].endswith("| 99.41% vs 99.32% (+0.09 points) |"), rows[3]
    assert rows[4] == "| tuning search time | 91 s (25 trials, 6 pruned; 812,000 training images) |"
    assert len(rows) == 5


def test_a_winning_baseline_and_older_metrics_are_shown_as_such():
    rows = tuning_table({"tune_cnn": {**TUNE, "best_trial": 0, "winner_is_baseline": True,
                                      "best_trial_val_acc": 0.9850, "val_acc": 0.9932},
                         "train_baseline": {"val_acc": 0.9932}})
    assert "(trial #0 (the baseline); +0.00 points)" in rows[2] and "(+0.00 points)" in rows[3]
    # Metrics of a run before the enqueued baseline existed: dashes, not invented numbers.
    old = tuning_table({"tune_cnn": {"val_acc": 0.9936, "best_trial_val_acc": 0.9836, "search_seconds": 21.7,
                                     "n_trials": 12}})
    assert old[2].endswith("| – vs 98.36% (trial –; –) |") and old[3].endswith("| 99.36% vs – (–) |")
    assert old[4] == "| tuning search time | 22 s (12 trials) |"
