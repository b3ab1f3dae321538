"""mnistpipe.lab.tunecompare: the search-setup comparison, on tiny real data (`--quick`), and its tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnistpipe import io
from mnistpipe.errors import PipelineError
from mnistpipe.lab import tunecompare

PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"


@pytest.fixture(scope="module")
def quick(t10k, tmp_path_factory):
    """`python -m mnistpipe.lab.tunecompare --quick` over two search seeds with a 2-seed spread, on real MNIST."""
    x, y = t10k
    tmp = tmp_path_factory.mktemp("tunecompare")
    io.save_tensors(tmp / "train.pt", {"x_train": x[:1000].clone(), "y_train": y[:1000].clone(),
                                       "x_val": x[1000:1300].clone(), "y_val": y[1000:1300].clone()})
    out = tunecompare.main(["--data", str(tmp / "train.pt"), "--params", str(PARAMS), "--seeds", "0", "1",
                            "--quick", "--spread-seeds", "2", "--device", "cpu", "--json", str(tmp / "cmp.json")])
    return out, json.loads((tmp / "cmp.json").read_text())


def test_quick_comparison_runs_every_setup_and_seed(quick):
    out, written = quick
    assert written == json.loads(json.dumps(out))
    runs = out["runs"]
    assert [(r["setup"], r["seed"]) for r in runs] == [(s, seed) for s in tunecompare.SETUPS for seed in (0, 1)]
    for r in runs:
        assert r["budget_used"] >= 6 * 500, r  # the quick budget: 6 passes over 500-image trial subsets
        assert r["trials"] >= 3 and 0 <= r["pruned"] < r["trials"]
        assert r["search_seconds"] > 0 and r["search_cpu_seconds"] > 0
        # The winner is the better of the search's best trial and the baseline on the objective (tie: baseline).
        assert r["winner_is_baseline"] == (r["baseline_trial_value"] >= r["best_trial_value"])
        if r["winner_is_baseline"]:
            assert r["winner"] == out["baseline_hp"]
        assert r["beats_baseline"] == (r["retrained_val_acc"] > out["baseline_val_acc"])
        if r["winner_is_baseline"]:  # the same configuration retrained at the same seed: the same model
            assert r["retrained_val_acc"] == out["baseline_val_acc"]
    for name, s in out["summary"].items():
        mine = [r for r in runs if r["setup"] == name]
        assert s["runs"] == 2 and s["beats_baseline"] == sum(r["beats_baseline"] for r in mine)
        assert s["mean_retrained_val_acc"] == pytest.approx(sum(r["retrained_val_acc"] for r in mine) / 2)
    best = max(s["beats_baseline"] for s in out["summary"].values())
    assert out["summary"][out["chosen"]]["beats_baseline"] == best


def test_quick_comparison_spread_and_tables(quick):
    out, _ = quick
    sp = out["spread"]
    assert sp["winner"] == next(r["winner"] for r in out["runs"] if r["setup"] == out["chosen"])
    assert len(sp["tuned"]) == len(sp["baseline"]) == 2
    assert sp["baseline"][out["retrain_seed"]] == out["baseline_val_acc"]  # seed 0's retrain, reused
    md = tunecompare.format_markdown(out)
    assert f"| {out['chosen']} (chosen) | 2 |" in md
    for r in out["runs"]:  # one row per run, after the summary rows
        assert md.count(f"\n| {r['setup']} | {r['seed']} | {r['trials']} ({r['pruned']}) | ") == 1, r
    assert "Over 2 training seeds: tuned" in md


def test_setups_are_sized_by_the_budget():
    space = {"epochs": {"low": 2, "high": 5}}
    setups = tunecompare.default_setups(budget=80, space=space)
    assert tuple(setups) == tunecompare.SETUPS == ("tpe-independent", "tpe-multivariate", "hyperband")
    assert setups["tpe-independent"]["sampler"] == {"n_startup_trials": 10, "multivariate": False}
    # 80 passes / 3.5 epochs a trial = about 23 trials; a third of them start at random.
    assert setups["tpe-multivariate"]["sampler"] == {"n_startup_trials": 8, "multivariate": True}
    assert setups["hyperband"]["pruner"] == {"kind": "hyperband", "min_resource": 1, "reduction_factor": 3}
    assert tunecompare.default_setups(budget=6, space=space)["hyperband"]["sampler"]["n_startup_trials"] == 4


@pytest.mark.parametrize("argv, needle", [
    (["--spread-seeds", "1"], "--spread-seeds must be 0"),
    (["--setups", "random"], "unknown setup random; choose from tpe-independent, tpe-multivariate, hyperband"),
    (["--params", "/nonexistent/params.yaml"], "/nonexistent/params.yaml not found"),
])
def test_bad_command_lines_are_one_line(argv, needle, tmp_path):
    with pytest.raises(PipelineError, match=needle):
        tunecompare.main(["--data", str(tmp_path / "absent.pt"), "--params", str(PARAMS), *argv])


def test_spread_sentence_says_whether_the_difference_exceeds_the_seeds():
    close = tunecompare.spread({}, [0.991, 0.992, 0.993], [0.992, 0.991, 0.993])
    assert "within the seed spread" in tunecompare.spread_sentence(close)
    far = tunecompare.spread({}, [0.995, 0.9951, 0.9949], [0.990, 0.9901, 0.9899])
    assert far["welch"]["delta"] == pytest.approx(0.005)
    assert "exceeds the seed spread" in tunecompare.spread_sentence(far)


def test_params_use_the_setup_the_committed_comparison_chose():
    """params.yaml's sampler, pruner, budget and search match benchmarks/tuning-compare.json, whose chosen setup
    (the one whose winner beat the baseline most often) is what benchmarks/RESULTS.md reports."""
    import yaml

    root = PARAMS.parent
    committed = json.loads((root / "benchmarks" / "tuning-compare.json").read_text())
    from mnistpipe.params import validate

    raw = yaml.safe_load(PARAMS.read_text())
    p = validate(raw, source=str(PARAMS)).tune_cnn.model_dump()
    chosen = committed["setups"][committed["chosen"]]
    assert (p["sampler"], p["pruner"]) == (chosen["sampler"], chosen["pruner"])
    assert (p["budget"], p["trial_train_size"], p["space"]) == (committed["budget"], committed["trial_train_size"],
                                                                committed["space"])
    assert committed["recipe"] == raw["recipe"]
    assert committed["baseline_hp"] == {k: raw[k] for k in committed["baseline_hp"]}
    best = max(committed["summary"].values(), key=lambda s: (s["beats_baseline"], s["mean_retrained_val_acc"]))
    assert committed["summary"][committed["chosen"]] == best
