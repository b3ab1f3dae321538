"""Which search setup finds a CNN that beats the baseline, at equal training budget: a comparison over seeds.

    python -m mnistpipe.lab.tunecompare --data data/prepared/train.pt --params params.yaml --seeds 0 1 2 \
        --json benchmarks/tuning-compare.json [--spread-seeds 5] [--quick]

For each setup (sampler + pruner) and search seed, `tune.tune_cnn` runs with params.yaml's space, recipe, budget
and trial subset (the search seed drives the sampler and the trial subset, as in the tune_cnn stage). As in the
select_cnn stage, the baseline's six hyperparameters are scored on the same objective (`tune.score`) and the winner
is the better of the search's best trial and the baseline (a tie keeps the baseline). The winner is then retrained
on the whole training split with params.yaml's seed, as the pipeline does, and compared with the baseline retrained
the same way. A setup is better
the more often its winner beats the baseline after that retrain. `--spread-seeds N` retrains the chosen setup's
first winner and the baseline at training seeds 0..N-1 and asks whether the difference exceeds the seed spread
(Welch's t-test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import io, tensors, tune
from ..errors import PipelineError
from ..models import CNN
from ..params import split_cnn
from ..runner import run_stage
from ..train import train_cnn
from .cli import read_params
from .seedgrid import stats, welch

SETUPS = ("tpe-independent", "tpe-multivariate", "hyperband")  # the names of `default_setups`, in its order


def _mean_epochs(space: dict[str, dict]) -> float:
    dim = space["epochs"]
    return statistics.fmean(dim["choices"]) if "choices" in dim else (dim["low"] + dim["high"]) / 2


def default_setups(*, budget: float, space: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """The three setups of the comparison, by name: {"sampler": ..., "pruner": ...} as `tune.tune_cnn` takes them.

    "tpe-independent": TPE with Optuna's default 10 random startup trials, independent (one dimension at a time), and
    the median pruner that may prune from epoch 1.
    "tpe-multivariate": multivariate TPE whose random startup is about a third of the trials the budget pays for
    without pruning (at least 4), same median pruner. "hyperband": the same
    sampler with Hyperband over epochs (min_resource 1, reduction_factor 3): many cheap trials.
    """
    startup = max(4, round(budget / _mean_epochs(space) / 3))
    median = {"kind": "median", "warmup_epochs": 0}
    return {
        "tpe-independent": {"sampler": {"n_startup_trials": 10, "multivariate": False}, "pruner": median},
        "tpe-multivariate": {"sampler": {"n_startup_trials": startup, "multivariate": True}, "pruner": median},
        "hyperband": {"sampler": {"n_startup_trials": startup, "multivariate": True},
                      "pruner": {"kind": "hyperband", "min_resource": 1, "reduction_factor": 3}},
    }


def _key(hp: dict[str, Any]) -> tuple:
    return tuple(sorted(hp.items()))


def compare(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, *,
            setups: dict[str, dict[str, dict]], seeds: Sequence[int], space: dict[str, dict],
            recipe: dict[str, Any], budget: float, trial_train_size: int, baseline_hp: dict[str, Any],
            retrain_seed: int, n_trials: int = 0, device: str = "auto", spread_seeds: int = 0,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every setup at every search seed, retrain each winner on the whole training split, and summarise.

    Returns {"runs": [...], "summary": {setup: ...}, "chosen": setup, "baseline_val_acc": ..., and with
    `spread_seeds` "spread": the chosen setup's first winner and the baseline retrained at training seeds
    0..spread_seeds-1, their mean ± std and Welch's test}. Retrains of one configuration at one seed run once.
    """
    if not setups or not seeds:
        raise PipelineError("nothing to compare: give at least one setup and one search seed (--seeds 0 1 2)")
    retrained: dict[tuple, float] = {}

    def retrain(hp: dict[str, Any], seed: int) -> float:
        key = (_key(hp), seed)
        if key not in retrained:
            config, training = split_cnn({**hp, **recipe})
            result = train_cnn(CNN(config, seed=seed), x_train, y_train, x_val, y_val, **training, seed=seed,
                               device=device)
            retrained[key] = result.metrics["val_acc"]
        return retrained[key]

    baseline_scores: dict[int, float] = {}

    def scored(seed: int) -> float:  # the baseline on search seed `seed`'s objective (its subset and seed)
        if seed not in baseline_scores:
            baseline_scores[seed] = tune.score(x_train, y_train, x_val, y_val, hp=baseline_hp, recipe=recipe,
                                               seed=seed, trial_train_size=trial_train_size, device=device)
        return baseline_scores[seed]

    baseline = retrain(baseline_hp, retrain_seed)
    log(f"baseline retrained at seed {retrain_seed}: val acc {100 * baseline:.2f}%")
    runs = []
    for name, setup in setups.items():
        for seed in seeds:
            wall, cpu = time.perf_counter(), time.process_time()
            found = tune.tune_cnn(x_train, y_train, x_val, y_val, space=space, recipe=recipe, budget=budget,
                                  seed=seed, sampler=setup["sampler"], pruner=setup["pruner"], n_trials=n_trials,
                                  trial_train_size=trial_train_size, device=device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            baseline_value = scored(seed)
            winner_is_baseline = tune.baseline_wins(baseline_value, found.best_value)
            winner = dict(baseline_hp) if winner_is_baseline else {k: found.best_params[k] for k in baseline_hp}
            value = retrain(winner, retrain_seed)
            runs.append({
                "setup": name, "seed": seed, "trials": len(found.trials), "pruned": found.n_pruned,
                "search_seconds": wall, "search_cpu_seconds": cpu, "budget_used": found.budget_used,
                "winner": winner, "winner_trial": found.best_trial, "winner_is_baseline": winner_is_baseline,
                "best_trial_value": found.best_value, "baseline_trial_value": baseline_value,
                "retrained_val_acc": value, "beats_baseline": value > baseline,
            })
            r = runs[-1]
            won = "the baseline" if winner_is_baseline else f"trial #{r['winner_trial']}"
            log(f"{name} seed {seed}: {r['trials']} trials ({r['pruned']} pruned) in {wall:.0f} s, winner {won}, "
                f"retrained {100 * value:.2f}% vs baseline {100 * baseline:.2f}%")
    summary = summarise(runs)
    # Most wins over the baseline; ties go to the higher mean retrained accuracy.
    chosen = max(summary, key=lambda s: (summary[s]["beats_baseline"], summary[s]["mean_retrained_val_acc"]))
    out = {"runs": runs, "summary": summary, "chosen": chosen, "baseline_val_acc": baseline,
           "retrain_seed": retrain_seed, "budget": budget, "trial_train_size": trial_train_size,
           "n_trials": n_trials, "space": space, "recipe": recipe, "baseline_hp": baseline_hp, "seeds": list(seeds),
           "setups": setups, "device": device, "threads": torch.get_num_threads()}
    if spread_seeds:
        winner = next(r["winner"] for r in runs if r["setup"] == chosen)
        tuned = [retrain(winner, s) for s in range(spread_seeds)]
        base = [retrain(baseline_hp, s) for s in range(spread_seeds)]
        out["spread"] = spread(winner, tuned, base)
    return out


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per setup: runs, how many winners beat the baseline after the retrain (and how many were the baseline),
    mean retrained val accuracy, mean search wall / CPU seconds, trials and pruned trials."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["setup"] for r in runs):
        rs = [r for r in runs if r["setup"] == name]
        out[name] = {"runs": len(rs), "beats_baseline": sum(r["beats_baseline"] for r in rs),
                     "winner_is_baseline": sum(r["winner_is_baseline"] for r in rs),
                     **{f"mean_{k}": statistics.fmean(r[k] for r in rs) for k in (
                         "retrained_val_acc", "best_trial_value", "search_seconds", "search_cpu_seconds",
                         "trials", "pruned")}}
    return out


def spread(winner: dict[str, Any], tuned: Sequence[float], base: Sequence[float]) -> dict[str, Any]:
    """The tuned and baseline val accuracies over training seeds, their mean ± std and Welch's t-test (tuned -
    baseline; None when it is undefined)."""
    t, b = stats(tuned), stats(base)
    w = welch(base, tuned)
    return {"winner": winner, "tuned": list(tuned), "baseline": list(base),
            "tuned_mean": t.mean, "tuned_std": t.std, "baseline_mean": b.mean, "baseline_std": b.std,
            "welch": None if w is None else {"delta": w.delta, "se": w.se, "t": w.t, "df": w.df, "p": w.p}}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _hp(hp: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())


def format_markdown(result: dict[str, Any]) -> str:
    """Markdown tables of a `compare` result: the summary per setup, every run, and the seed spread if any."""
    lines = [f"Baseline retrained at seed {result['retrain_seed']}: val accuracy {_pct(result['baseline_val_acc'])}%.",
             "", "| setup | runs | winner beats baseline | winner is baseline | mean retrained val acc (%) | "
             "mean search s (wall / CPU) | mean trials (pruned) |", "|---|---|---|---|---|---|---|"]
    for name, s in result["summary"].items():
        mark = " (chosen)" if name == result["chosen"] else ""
        lines.append(f"| {name}{mark} | {s['runs']} | {s['beats_baseline']} | {s['winner_is_baseline']} | "
                     f"{_pct(s['mean_retrained_val_acc'])} | {s['mean_search_seconds']:.1f} / "
                     f"{s['mean_search_cpu_seconds']:.1f} | {s['mean_trials']:.1f} ({s['mean_pruned']:.1f}) |")
    lines += ["", "| setup | seed | trials (pruned) | search s | images | winner | baseline / best trial on the "
              "objective (%) | retrained (%) | beats baseline |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        winner = "baseline" if r["winner_is_baseline"] else f"#{r['winner_trial']}: {_hp(r['winner'])}"
        lines.append(f"| {r['setup']} | {r['seed']} | {r['trials']} ({r['pruned']}) | {r['search_seconds']:.1f} | "
                     f"{r['budget_used']:,} | {winner} | {_pct(r['baseline_trial_value'])} / "
                     f"{_pct(r['best_trial_value'])} | {_pct(r['retrained_val_acc'])} | "
                     f"{'yes' if r['beats_baseline'] else 'no'} |")
    if "spread" in result:
        lines += ["", spread_sentence(result["spread"])]
    return "\n".join(lines)


def spread_sentence(sp: dict[str, Any]) -> str:
    """One line: tuned vs baseline val accuracy over training seeds, and whether it exceeds the seed spread."""
    def ms(mean: float, std: float | None) -> str:
        return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")

    text = (f"Over {len(sp['tuned'])} training seeds: tuned {ms(sp['tuned_mean'], sp['tuned_std'])} % vs baseline "
            f"{ms(sp['baseline_mean'], sp['baseline_std'])} % val accuracy")
    w = sp["welch"]
    if w is None:
        return text + " (Welch's t-test undefined: fewer than two seeds or no spread)."
    verdict = "exceeds the seed spread" if w["p"] < 0.05 else "within the seed spread"
    return (text + f"; Δ = {100 * w['delta']:+.2f} points (standard error {100 * w['se']:.2f}), Welch's t = "
            f"{w['t']:.2f}, df = {w['df']:.1f}, p = {w['p']:.2g}: {verdict} at α = 0.05.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m mnistpipe.lab.tunecompare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/prepared/train.pt"), help="download's training file")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds")
    ap.add_argument("--setups", nargs="+", help="a subset of the setups (default: all)")
    ap.add_argument("--spread-seeds", type=int, default=0, help="retrain the chosen winner and the baseline at "
                    "training seeds 0..N-1 (0 = skip)")
    ap.add_argument("--device", help="auto, cpu or cuda (default: params.yaml's device)")
    ap.add_argument("--quick", action="store_true", help="a tiny run for tests: 1,000 training and 300 val images, "
                    "trials of 500 images, budget 6 passes, 1-2 epochs, a small CNN")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--traceback", action="store_true", help="show the traceback of a user error")
    return ap.parse_args(argv)


def _quick(d: dict[str, torch.Tensor], space: dict, recipe: dict, hp: dict) -> tuple:
    d = {"x_train": d["x_train"][:1000], "y_train": d["y_train"][:1000], "x_val": d["x_val"][:300],
         "y_val": d["y_val"][:300]}
    space = {**space, "epochs": {"low": 1, "high": 2}, "batch_size": {"choices": [32, 64]}}
    return d, space, {**recipe, "channels": [4, 8], "hidden": 16}, {**hp, "epochs": 1, "batch_size": 64}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Read params.yaml and the training data, run `compare`, print the tables, optionally write JSON."""
    args = parse_args(argv)
    if args.spread_seeds < 0 or args.spread_seeds == 1:
        raise PipelineError("--spread-seeds must be 0 (skip) or at least 2 (a spread needs two seeds)")
    unknown = set(args.setups or ()) - set(SETUPS)
    if unknown:
        raise PipelineError(f"unknown setup {', '.join(sorted(unknown))}; choose from {', '.join(SETUPS)}")
    params = read_params(args.params)
    t = tensors.checked(io.load_tensors(args.data, producer="download"), ("x_train", "y_train", "x_val", "y_val"),
                        source=str(args.data), producer="download")
    d = {k: tensors.to_float(v) if k.startswith("x_") else v for k, v in t.items()}
    tc = params.tune_cnn
    space, recipe, hp = tc.space.model_dump(), params.recipe.model_dump(mode="json"), params.baseline()
    budget, subset = tc.budget, tc.trial_train_size
    if args.quick:
        d, space, recipe, hp = _quick(d, space, recipe, hp)
        budget, subset = 6, 500
    setups = {k: v for k, v in default_setups(budget=budget, space=space).items() if k in (args.setups or SETUPS)}
    result = compare(d["x_train"], d["y_train"], d["x_val"], d["y_val"], setups=setups, seeds=args.seeds,
                     space=space, recipe=recipe, budget=budget, trial_train_size=subset, baseline_hp=hp,
                     retrain_seed=params.seed, n_trials=tc.n_trials, device=args.device or params.device,
                     spread_seeds=args.spread_seeds)
    result["quick"] = args.quick
    result["dataset"] = params.dataset
    print(format_markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run_stage(main)
