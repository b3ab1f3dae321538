"""The seed-grid tabulator on hand-made `dvc exp show --json` output of the real DVC 3 shape.

The shape (checked on DVC 3.67 with a queued grid, one experiment of which failed): a list of commits, the first
being the workspace; a baseline commit holds `experiments`, each with `revs` (one rev: name, data.params,
data.metrics, error) and `executor.state` (queued, running, success or failed). A queued experiment has no
metrics; a failed one shows the metrics of its baseline commit, which must not count as a result.
Means and standard deviations below are worked out by hand.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mnistpipe.errors import PipelineError
from mnistpipe.lab import seedgrid

SEED_GRID_DOC = Path(__file__).resolve().parents[3] / "docs" / "seed-grid.md"
METRICS = "metrics/train_baseline/metrics.json"
BASE = {"seed": 0, "dropout": 0.25, "lr": 0.003, "train_baseline": {"channels": [16, 32, 64], "hidden": 128}}


def _rev(name, params, metrics, error=None, ts="2026-01-01T00:00:00"):
    return {"rev": f"{abs(hash(name)):040x}"[:40], "name": name, "error": error, "experiments": None,
            "data": {"rev": "x", "timestamp": ts, "params": {"params.yaml": {"data": params}},
                     "metrics": metrics, "deps": {}, "outs": {}, "meta": {}}}


def exp(name, seed, dropout, val_acc=None, *, state="success", extra=None, params=None, ts="2026-01-01T00:00:00",
        other_metrics=None):
    """One experiment entry as `dvc exp show --json` nests it under its baseline commit."""
    p = {**BASE, "seed": seed, "dropout": dropout, **(params or {})}
    metrics = {} if val_acc is None else {METRICS: {"data": {"val_acc": val_acc, "val_loss": 0.03, **(extra or {})}}}
    metrics.update(other_metrics or {})
    error = {"msg": "Experiment run failed", "type": ""} if state == "failed" else None
    return {"revs": [_rev(name, p, metrics, error, ts)], "name": name,
            "executor": {"state": state, "name": "dvc-task", "local": {"returncode": 0 if state == "success" else
                                                                        None}}}


def shown(*experiments):
    """Workspace row, then the baseline commit (seed 0, dropout 0.25, val_acc 0.5) holding `experiments`."""
    base_metrics = {METRICS: {"data": {"val_acc": 0.5, "val_loss": 0.03}}}
    workspace = _rev("workspace", BASE, base_metrics)
    workspace["rev"], workspace["name"] = "workspace", None
    baseline = _rev("main", BASE, base_metrics)
    baseline["experiments"] = list(experiments)
    return [workspace, baseline]


GRID = [exp("a0", 0, 0, 0.97), exp("a1", 1, 0, 0.98), exp("a2", 2, 0, 0.99),
        exp("b0", 0, 0.25, 0.990), exp("b1", 1, 0.25, 0.992), exp("b2", 2, 0.25, 0.994)]


def rows_of(table: str) -> list[list[str]]:
    """Cells of the markdown table's body rows."""
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_mean_and_sample_std_per_setting():
    table = seedgrid.tabulate(shown(*GRID), ["val_acc"])
    assert table.splitlines()[0] == "| dropout | n | seeds | val_acc: mean ± std |"
    # 0.97/0.98/0.99: mean 0.98, sample std 0.01; 0.990/0.992/0.994: mean 0.992, std 0.002 (ddof=1).
    assert rows_of(table) == [["0", "3", "0, 1, 2", "0.9800 ± 0.0100"], ["0.25", "3", "0, 1, 2", "0.9920 ± 0.0020"]]
    pct = seedgrid.tabulate(shown(*GRID), [f"{METRICS}:val_acc"], percent=True, by=["dropout"])
    assert [r[3] for r in rows_of(pct)] == ["98.00 ± 1.00", "99.20 ± 0.20"]
    assert "Left out" not in table and "Warning" not in table


def test_welch_line_by_hand():
    # SE = sqrt(0.01²/3 + 0.002²/3) = 0.0058878; t = 0.012 / SE = 2.0381;
    # df = (1.04e-4/3)² / ((1e-4/3)²/2 + (4e-6/3)²/2) = 2.1598.
    w = seedgrid.welch([0.97, 0.98, 0.99], [0.990, 0.992, 0.994])
    assert w.delta == pytest.approx(0.012)
    assert w.se == pytest.approx(0.0058878, rel=1e-4)
    assert w.t == pytest.approx(2.0381, rel=1e-4)
    assert w.df == pytest.approx(2.1598, rel=1e-4)
    from scipy import stats

    assert w.p == pytest.approx(stats.ttest_ind([0.990, 0.992, 0.994], [0.97, 0.98, 0.99], equal_var=False).pvalue)
    assert 0.1 < w.p < 0.3
    table = seedgrid.tabulate(shown(*GRID), ["val_acc"], percent=True)
    assert ("dropout=0.25 vs dropout=0, val_acc: Δ = +1.20 points (standard error 0.59 points), Welch's t = 2.04, "
            "df = 2.2, two-sided p = ") in table
    assert "not significant at α = 0.05" in table
    far = [exp("c0", 0, 0, 0.90), exp("c1", 1, 0, 0.91), exp("d0", 0, 0.25, 0.99), exp("d1", 1, 0.25, 0.995)]
    assert "significant at α = 0.05: larger than" in seedgrid.tabulate(shown(*far), ["val_acc"])
    worse = [exp("g0", 0, 0, 0.99), exp("g1", 1, 0, 0.98), exp("h0", 0, 0.25, 0.90), exp("h1", 1, 0.25, 0.91)]
    assert "Δ = -0.0800 (standard error 0.0071)" in seedgrid.tabulate(shown(*worse), ["val_acc"])
    assert seedgrid.welch([0.9], [0.8, 0.7]) is None
    one_seed = seedgrid.tabulate(shown(exp("e0", 0, 0, 0.9), exp("f0", 0, 0.25, 0.8)), ["val_acc"])
    assert rows_of(one_seed)[0][3] == "0.9000 ± n/a" and "no test" in one_seed


def test_failed_queued_and_running_experiments_are_left_out():
    # The failed one carries the baseline's metrics (0.5) as DVC shows them; counted, it would drag the mean down.
    grid = [*GRID, exp("bad", 3, 0, 0.5, state="failed"), exp("wait", 4, 0, state="queued"),
            exp("busy", 5, 0, state="running")]
    table = seedgrid.tabulate(shown(*grid), ["val_acc"])
    assert rows_of(table)[0] == ["0", "3", "0, 1, 2", "0.9800 ± 0.0100"]
    assert "Left out: bad (failed); wait (queued); busy (running)." in table
    runs, left = seedgrid.parse_exp_show(shown(*grid))
    assert sorted(r.name for r in runs) == sorted(e["name"] for e in GRID)
    # An experiment run without the queue has no executor: it counts when it has no error.
    plain = exp("plain", 7, 0, 0.95)
    plain["executor"] = None
    assert "plain" in [r.name for r in seedgrid.parse_exp_show(shown(plain))[0]]


def test_missing_metric_and_duplicate_params():
    grid = [*GRID, exp("nometric", 3, 0, other_metrics={"metrics/other.json": {"data": {"x": 1}}}),
            exp("again", 1, 0, 0.98, ts="2025-01-01T00:00:00")]
    table = seedgrid.tabulate(shown(*grid), ["val_acc"])
    assert rows_of(table)[0] == ["0", "3", "0, 1, 2", "0.9800 ± 0.0100"]
    assert "nometric (no val_acc)" in table and "again (same params as a1)" in table


def test_metric_errors_name_the_fix():
    with pytest.raises(PipelineError, match=r"metric 'val_ac' is in no finished experiment.*"
                                            r"metrics/train_baseline/metrics.json:val_acc"):
        seedgrid.tabulate(shown(*GRID), ["val_ac"])
    two_files = [exp(f"t{s}", s, 0, 0.9 + s / 100, other_metrics={"metrics/tune.json": {"data": {"val_acc": 0.7}}})
                 for s in range(2)]
    with pytest.raises(PipelineError, match=r"in 2 metrics files .* e\.g\. --metric metrics/train_baseline"):
        seedgrid.tabulate(shown(*two_files), ["val_acc"])
    # A tail of the path picks the file.
    assert rows_of(seedgrid.tabulate(shown(*two_files), ["train_baseline/metrics.json:val_acc"]))[0][3] == (
        "0.9050 ± 0.0071")
    nan = [exp("n0", 0, 0, float("nan")), *GRID]
    assert "n0 (val_acc is nan)" in seedgrid.tabulate(shown(*nan), ["val_acc"])


def test_nothing_to_tabulate_is_an_error():
    with pytest.raises(PipelineError, match=r"no finished experiment to tabulate \(left out: none at all\)"):
        seedgrid.tabulate(shown(), ["val_acc"])
    with pytest.raises(PipelineError, match=r"left out: q \(queued\), f \(failed\)"):
        seedgrid.tabulate(shown(exp("q", 0, 0, state="queued"), exp("f", 1, 0, 0.5, state="failed")), ["val_acc"])
    with pytest.raises(PipelineError, match="not `dvc exp show --json` output"):
        seedgrid.tabulate({"rows": []}, ["val_acc"])
    with pytest.raises(PipelineError, match="--seed-key"):
        seedgrid.tabulate(shown(*GRID), ["val_acc"], seed_key="random_state")


def test_grouping_default_by_and_a_param_varying_inside_a_setting():
    lr = [exp("l0", 0, 0, 0.96, params={"lr": 0.01}), exp("l1", 1, 0, 0.95, params={"lr": 0.01})]
    table = seedgrid.tabulate(shown(*GRID, *lr), ["val_acc"])
    assert table.splitlines()[0].startswith("| dropout | lr | n |")
    assert [r[:3] for r in rows_of(table)] == [["0", "0.003", "3"], ["0", "0.01", "2"], ["0.25", "0.003", "3"]]
    assert table.count("Welch's t") == 2  # each later setting against the first
    with pytest.raises(PipelineError, match=r"lr also varies among the experiments with dropout=0; add it to --by"):
        seedgrid.tabulate(shown(*GRID, *lr), ["val_acc"], by=["dropout"])
    with pytest.raises(PipelineError, match=r"--by droput: no such param.*params that vary: dropout"):
        seedgrid.tabulate(shown(*GRID), ["val_acc"], by=["droput"])
    # Nothing varies but the seed: one row; --exp keeps only the named experiments.
    only = seedgrid.tabulate(shown(*GRID), ["val_acc"], names=["a0", "a2", "gone"])
    assert rows_of(only) == [["all", "2", "0, 2", "0.9800 ± 0.0141"]]
    assert "gone (not in `dvc exp show`)" in only


def test_a_metric_equal_in_every_experiment_is_flagged():
    # e.g. evaluate.json under a train_baseline target: every experiment keeps the baseline commit's file.
    stale = [exp(e["name"], 0, 0, 0.9, other_metrics={"metrics/evaluate.json": {"data": {"acc": 0.99}}})
             for e in GRID]
    for i, e in enumerate(stale):
        e["revs"][0]["data"]["params"]["params.yaml"]["data"].update(seed=i % 3, dropout=[0, 0.25][i // 3])
    table = seedgrid.tabulate(shown(*stale), ["evaluate.json:acc"])
    assert "Warning: evaluate.json:acc is 0.9900 in all 6 experiments" in table


def test_the_seed_grid_page():
    section = SEED_GRID_DOC.read_text()
    assert section.count(seedgrid.START) == 1 and section.count(seedgrid.END) == 1
    for needed in ("dvc exp run --queue -S seed=0,1,2,3,4 -S dropout=0,0.25 train_baseline", "dvc queue start -j 2",
                   "python -m mnistpipe.lab.seedgrid", "scripts/seed_grid.sh", "Welch"):
        assert needed in section, needed


def _cli(args, *, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "mnistpipe.lab.seedgrid", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_cli_reads_stdin_and_fails_with_one_line(tmp_path):
    ok = _cli(["--json", "-", "--metric", "val_acc", "--by", "dropout"], stdin=json.dumps(shown(*GRID)))
    assert ok.returncode == 0, ok.stderr
    assert rows_of(ok.stdout)[1] == ["0.25", "3", "0, 1, 2", "0.9920 ± 0.0020"]
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(shown(exp("q", 0, 0, state="queued"))))
    bad = _cli(["--json", str(empty), "--metric", "val_acc", "--readme", str(tmp_path / "R.md")])
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no finished experiment to tabulate (left out: q (queued))")
    assert not (tmp_path / "R.md").exists()


def test_unreadable_input_names_the_file(tmp_path):
    with pytest.raises(PipelineError, match=r"cannot read --json .*nothing\.json"):
        seedgrid.main(["--json", str(tmp_path / "nothing.json"), "--metric", "val_acc"])
    broken = tmp_path / "broken.json"
    broken.write_text('[{"rev": ')
    with pytest.raises(PipelineError, match=r"broken\.json is not JSON"):
        seedgrid.main(["--json", str(broken), "--metric", "val_acc"])


def test_cli_writes_the_readme_block(tmp_path, monkeypatch, capsys):
    source = tmp_path / "shown.json"
    source.write_text(json.dumps(shown(*GRID)))
    readme = tmp_path / "R.md"
    readme.write_text(f"# x\n{seedgrid.START}\nplaceholder\n{seedgrid.END}\ntail\n")
    seedgrid.main(["--json", str(source), "--metric", "val_acc", "--percent"])
    printed = capsys.readouterr().out
    seedgrid.main(["--json", str(source), "--metric", "val_acc", "--percent", "--readme", str(readme)])
    assert readme.read_text() == f"# x\n{seedgrid.START}\n{printed.strip()}\n{seedgrid.END}\ntail\n"
    assert "99.20 ± 0.20" in printed
    assert not math.isnan(seedgrid.stats([1.0]).mean) and seedgrid.stats([1.0]).std is None


def test_cli_writes_the_summary_the_report_shows(tmp_path):
    """--summary: per setting its seeds, values, mean and sample std; Welch's test of the later setting against the
    first; the params every experiment shares (not the seed or the grouping param); the commit given."""
    source = tmp_path / "shown.json"
    source.write_text(json.dumps(shown(*GRID)))
    out = tmp_path / "grid.json"
    seedgrid.main(["--json", str(source), "--metric", "val_acc", "--by", "dropout", "--summary", str(out),
                   "--commit", "abc123"])
    grid = json.loads(out.read_text())
    assert grid["commit"] == "abc123" and grid["metric"] == "val_acc"
    first, second = grid["settings"]
    assert first["params"] == {"dropout": 0} and first["seeds"] == [0, 1, 2] and first["n"] == 3
    assert first["mean"] == pytest.approx(0.98) and first["std"] == pytest.approx(0.01)
    assert second["params"] == {"dropout": 0.25} and second["mean"] == pytest.approx(0.992)
    (welch,) = grid["welch"]
    assert welch["delta"] == pytest.approx(0.012) and 0 < welch["p"] < 1
    assert grid["shared_params"] == {"lr": 0.003, "train_baseline.channels": [16, 32, 64],
                                     "train_baseline.hidden": 128}
    with pytest.raises(PipelineError, match="one --metric"):
        seedgrid.main(["--json", str(source), "--metric", "val_acc", "--metric", "val_loss", "--summary",
                       str(out)])
