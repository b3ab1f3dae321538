"""Seed-averaged comparisons of DVC experiments: mean ± std per setting, from `dvc exp show --json`.

Queue a grid (DVC expands comma lists into their cartesian product) and run it, then tabulate:

    dvc exp run --queue -S seed=0,1,2,3,4 -S dropout=0,0.25 train_baseline
    dvc queue start -j 2
    python -m mnistpipe.lab.seedgrid --metric train_baseline/metrics.json:val_acc --by dropout --percent

Experiments are grouped by `--by` (default: every param that varies between them except the seed); each group
gets n, its seeds and the sample mean ± standard deviation (ddof=1) of each metric, as a markdown table. With two
or more groups, each later group is compared with the first by Welch's two-sided t-test (unequal variances), the
spread of the seeds being the noise. Queued, running and failed experiments are left out and listed: DVC shows a
failed experiment with the metrics of its baseline commit, which would pass for a result.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import PipelineError
from .markers import markers, replace_between

BLOCK = "seedgrid"  # --readme puts the table between this block's markers
START, END = markers(BLOCK)
ALPHA = 0.05
COMMIT = "commit"  # pseudo-param: the baseline commit, when experiments of several commits are shown together


@dataclass(frozen=True)
class Run:
    """One finished experiment: its name, flattened params (dotted keys) and metrics by file."""

    name: str
    timestamp: str
    params: dict[str, Any]
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Stats:
    n: int
    mean: float
    std: float | None  # sample standard deviation; None for a single value


@dataclass(frozen=True)
class Welch:
    delta: float  # mean(b) - mean(a)
    se: float
    t: float
    df: float
    p: float


def _error(message: str) -> Exception:
    return PipelineError(message)


def _freeze(value: Any) -> Any:
    """Lists as tuples, so that values can be compared and grouped."""
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: value}."""
    if not isinstance(data, dict):
        return {prefix[:-1]: _freeze(data)}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _params(data: dict) -> dict[str, Any]:
    """Params of one rev, flattened: `params.yaml` keys as they are, keys of other files as `FILE:key`."""
    out: dict[str, Any] = {}
    for file, entry in (data.get("params") or {}).items():
        flat = _flatten((entry or {}).get("data") or {})
        out.update(flat if file == "params.yaml" else {f"{file}:{k}": v for k, v in flat.items()})
    return out


def parse_exp_show(rows: Any) -> tuple[list[Run], list[tuple[str, str]]]:
    """Finished experiments in `dvc exp show --json` output, and (name, reason) of every one left out.

    The workspace and baseline rows are not experiments and are skipped silently. An experiment counts when its
    executor state is `success` (or absent, as for `dvc exp run` without the queue) and it carries no error.
    """
    if not isinstance(rows, list):
        raise _error("the JSON is not `dvc exp show --json` output (expected a list of commits); pass what "
                     "`dvc exp show --json` printed")
    runs: list[Run] = []
    left: list[tuple[str, str]] = []
    baselines = {row.get("rev") for row in rows if isinstance(row, dict) and row.get("experiments")}
    for row in rows:
        if not isinstance(row, dict):
            continue
        for exp in row.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp.get("revs") or []:
                name = rev.get("name") or exp.get("name") or str(rev.get("rev", "?"))[:7]
                error = rev.get("error")
                if state not in (None, "success"):
                    left.append((name, state))
                elif error:
                    left.append((name, f"error: {error.get('msg', error) if isinstance(error, dict) else error}"))
                else:
                    data = rev.get("data") or {}
                    params = _params(data)
                    if len(baselines) > 1:
                        params[COMMIT] = str(row.get("rev", ""))[:7]
                    metrics = {f: (e or {}).get("data") for f, e in (data.get("metrics") or {}).items()}
                    runs.append(Run(name, str(data.get("timestamp") or ""), params, metrics))
    return runs, left


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            raise KeyError(key)
    return data


def resolve_metric(runs: Sequence[Run], spec: str) -> tuple[str, str]:
    """(metrics file, dotted key) named by `spec`: `KEY` or `FILE:KEY`, FILE being the path or any tail of it."""
    file_part, _, key = spec.rpartition(":")
    files = sorted({f for r in runs for f in r.metrics})
    if file_part:
        files = [f for f in files if f == file_part or f.endswith("/" + file_part)]
    found = [f for f in files if any(_has(r.metrics.get(f), key) for r in runs)]
    if not found:
        known = sorted({f"{f}:{k}" for r in runs for f, d in r.metrics.items() for k in _flatten(d or {})
                        if isinstance(_lookup_or_none(d, k), (int, float))})
        raise _error(f"metric {spec!r} is in no finished experiment; pass --metric FILE:KEY, one of: "
                     f"{', '.join(known[:12]) or 'none (the experiments have no metrics)'}"
                     f"{' ...' if len(known) > 12 else ''}")
    if len(found) > 1:
        raise _error(f"metric {spec!r} is in {len(found)} metrics files ({', '.join(found)}); name the file, "
                     f"e.g. --metric {found[0]}:{key}")
    return found[0], key


def _has(data: Any, key: str) -> bool:
    return _lookup_or_none(data, key) is not None


def _lookup_or_none(data: Any, key: str) -> Any:
    try:
        return _lookup(data, key)
    except KeyError:
        return None


def metric_values(runs: Sequence[Run], specs: Sequence[str]) -> tuple[list[tuple[Run, list[float]]],
                                                                       list[tuple[str, str]]]:
    """Each run with the values of every metric in `specs`; runs lacking one (or holding a non-finite one) are
    left out with the reason, so every metric is averaged over the same runs."""
    where = [resolve_metric(runs, spec) for spec in specs]
    kept, left = [], []
    for run in runs:
        values, why = [], ""
        for spec, (file, key) in zip(specs, where, strict=True):
            value = _lookup_or_none(run.metrics.get(file), key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                why = f"no {spec}" if value is None else f"{spec} is not a number: {value!r}"
            elif not math.isfinite(value):
                why = f"{spec} is {value}"
            values.append(value)
        if why:
            left.append((run.name, why))
        else:
            kept.append((run, [float(v) for v in values]))
    return kept, left


def varying(runs: Iterable[Run], *, exclude: Iterable[str] = ()) -> list[str]:
    """Params whose value differs between the runs (missing counts as a value), sorted."""
    runs = list(runs)
    keys = sorted({k for r in runs for k in r.params} - set(exclude))
    return [k for k in keys if len({_key(r.params.get(k)) for r in runs}) > 1]


def _key(value: Any) -> str:
    """A grouping key that treats 0 and 0.0 alike, as YAML and `-S dropout=0` make both."""
    return json.dumps(float(value) if isinstance(value, int) and not isinstance(value, bool) else value,
                      sort_keys=True, default=str)


def dedupe(runs: Sequence[Run]) -> tuple[list[Run], list[tuple[str, str]]]:
    """One run per distinct set of params (the newest): a rerun of the same params and seed is the same data
    point, not another sample, and counting it twice would shrink the standard deviation."""
    newest: dict[str, Run] = {}
    left = []
    for run in sorted(runs, key=lambda r: r.timestamp, reverse=True):
        k = _params_key(run)
        if k in newest:
            left.append((run.name, f"same params as {newest[k].name}"))
        else:
            newest[k] = run
    return [r for r in runs if newest.get(_params_key(r)) is r], left


def _params_key(run: Run) -> str:
    return json.dumps(sorted((k, _key(v)) for k, v in run.params.items()))


def stats(values: Sequence[float]) -> Stats:
    """n, mean and sample standard deviation (ddof=1; None for one value)."""
    if not values:
        raise ValueError("no values")
    return Stats(len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def welch(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's two-sided t-test of mean(b) - mean(a); None when a group has fewer than two values or neither
    has any spread (t undefined)."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return None
    from scipy import stats as sstats  # scipy comes with scikit-learn; late, as nothing else here needs it

    delta = statistics.fmean(b) - statistics.fmean(a)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = delta / se
    return Welch(delta, se, t, df, float(2 * sstats.t.sf(abs(t), df)))


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if value is None:
        return "–"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _fmt(x: float, digits: int, percent: bool) -> str:
    return f"{x * 100:.{digits}f}" if percent else f"{x:.{digits}f}"


def _order(value: Any) -> tuple:
    """Sort key: None first, then numbers by value, then everything else by its text."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, _show(value))


def _seeds(values: Iterable[Any]) -> str:
    return ", ".join(_show(v) for v in sorted(values, key=_order))


@dataclass(frozen=True)
class Grid:
    """Finished experiments grouped into settings: `by` (the params that define a setting), `order` (the settings'
    keys, sorted), `groups` (key -> [(run, metric values)]), `kept` (every run used) and `left` (name, why)."""

    by: list[str]
    order: list[tuple[str, ...]]
    groups: dict[tuple[str, ...], list[tuple[Run, list[float]]]]
    kept: list[tuple[Run, list[float]]]
    left: list[tuple[str, str]]


def group(rows: Any, metrics: Sequence[str], *, by: Sequence[str] | None = None, seed_key: str = "seed",
          names: Sequence[str] | None = None) -> Grid:
    """The finished experiments of `rows` (the parsed `dvc exp show --json`) with every metric of `metrics` (`KEY`
    or `FILE:KEY` specs), grouped by `by` (default: all params that vary, except `seed_key`); `names` keeps only
    those experiments. A param outside `by` that varies within a setting is an error."""
    if not metrics:
        raise _error("no metric to tabulate; pass --metric FILE:KEY (e.g. train_baseline/metrics.json:val_acc)")
    runs, left = parse_exp_show(rows)
    if names:
        wanted = set(names)
        left = [item for item in left if item[0] in wanted]
        left += [(n, "not in `dvc exp show`") for n in sorted(wanted - {r.name for r in runs} - {n for n, _ in left})]
        runs = [r for r in runs if r.name in wanted]
    if not runs:
        reasons = ", ".join(f"{n} ({why})" for n, why in left[:6]) or "none at all"
        raise _error(f"no finished experiment to tabulate (left out: {reasons}); queue a grid with `dvc exp run "
                     "--queue -S seed=0,1,2 -S KEY=A,B TARGET`, run it with `dvc queue start`, wait for `dvc queue "
                     "status` to show Success, then rerun this")
    if not all(seed_key in r.params for r in runs):
        raise _error(f"param {seed_key!r} is missing from {sum(seed_key not in r.params for r in runs)} of "
                     f"{len(runs)} experiments; pass --seed-key with the params key that holds the seed")
    runs, dup = dedupe(runs)
    kept, no_metric = metric_values(runs, metrics)
    left = left + dup + no_metric
    if not kept:
        raise _error(f"no finished experiment has every metric {', '.join(metrics)} (e.g. {left[-1][0]}: "
                     f"{left[-1][1]}); check --metric")
    runs_kept = [r for r, _ in kept]
    by = list(by) if by else varying(runs_kept, exclude=[seed_key])
    unknown = [k for k in by if not any(k in r.params for r in runs_kept)]
    if unknown:
        raise _error(f"--by {', '.join(unknown)}: no such param in the experiments; params that vary: "
                     f"{', '.join(varying(runs_kept, exclude=[seed_key])) or 'none but the seed'}")
    groups: dict[tuple[str, ...], list[tuple[Run, list[float]]]] = {}
    for run, values in kept:
        groups.setdefault(tuple(_key(run.params.get(k)) for k in by), []).append((run, values))
    for members in groups.values():
        stray = varying([r for r, _ in members], exclude=[seed_key, *by])
        if stray:
            setting = ", ".join(f"{k}={_show(members[0][0].params.get(k))}" for k in by) or "all"
            raise _error(f"{', '.join(stray)} also varies among the experiments with {setting}; add it to --by or "
                         "pick the experiments with --exp")
    order = sorted(groups, key=lambda g: [_order(json.loads(v)) for v in g])
    return Grid(by=by, order=order, groups=groups, kept=kept, left=left)


def summarise_grid(grid: Grid, *, seed_key: str = "seed") -> dict[str, Any]:
    """The grid as JSON-ready data for one metric: the params shared by every experiment, one entry per setting
    (its params, seeds, values, n, mean and sample std) and Welch's test of each later setting against the first."""
    shared = {k: v for k, v in grid.kept[0][0].params.items()
              if k not in (seed_key, *grid.by) and all(r.params.get(k) == v for r, _ in grid.kept)}
    settings = []
    for g in grid.order:
        members = sorted(grid.groups[g], key=lambda m: _order(m[0].params[seed_key]))
        values = [v[0] for _, v in members]
        s = stats(values)
        settings.append({"params": {k: members[0][0].params.get(k) for k in grid.by},
                         "seeds": [r.params[seed_key] for r, _ in members], "values": values, "n": s.n,
                         "mean": s.mean, "std": s.std})
    tests = []
    for later in settings[1:]:
        w = welch(settings[0]["values"], later["values"])
        tests.append(None if w is None else {"delta": w.delta, "se": w.se, "t": w.t, "df": w.df, "p": w.p})
    return {"shared_params": shared, "settings": settings, "welch": tests, "alpha": ALPHA,
            "left_out": [list(item) for item in grid.left]}


def tabulate(rows: Any, metrics: Sequence[str], *, by: Sequence[str] | None = None, seed_key: str = "seed",
             names: Sequence[str] | None = None, percent: bool = False, digits: int | None = None) -> str:
    """Markdown: one row per setting with n, seeds and mean ± std of each metric, then one Welch line per metric
    and later group (against the first), then the experiments left out and why (arguments as `group` takes them).
    """
    return render(group(rows, metrics, by=by, seed_key=seed_key, names=names), metrics, seed_key=seed_key,
                  percent=percent, digits=digits)


def render(grid: Grid, metrics: Sequence[str], *, seed_key: str = "seed", percent: bool = False,
           digits: int | None = None) -> str:
    """The Markdown of `tabulate` for a grid `group` made of these `metrics`."""
    digits = (2 if percent else 4) if digits is None else digits
    by, order, groups, kept, left = grid.by, grid.order, grid.groups, grid.kept, grid.left
    unit = " %" if percent else ""
    head = [*(by or ["setting"]), "n", "seeds", *(f"{m}: mean ± std{' (%)' if percent else ''}" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summaries = {}
    for g in order:
        members = groups[g]
        cols = [_show(members[0][0].params.get(k)) for k in by] or ["all"]
        cols += [str(len(members)), _seeds(r.params[seed_key] for r, _ in members)]
        for i in range(len(metrics)):
            s = stats([v[i] for _, v in members])
            summaries[g, i] = [v[i] for _, v in members]
            std = "n/a" if s.std is None else _fmt(s.std, digits, percent)
            cols.append(f"{_fmt(s.mean, digits, percent)} ± {std}")
        lines.append("| " + " | ".join(cols) + " |")

    def label(g: tuple[str, ...]) -> str:
        return ", ".join(f"{k}={_show(groups[g][0][0].params.get(k))}" for k in by)

    notes = []
    for g in order[1:]:
        for i, m in enumerate(metrics):
            w = welch(summaries[order[0], i], summaries[g, i])
            what = f"{label(g)} vs {label(order[0])}, {m}:"
            if w is None:
                notes.append(f"{what} no test (Welch's t-test needs at least two seeds per setting and some spread).")
                continue
            pts = " points" if percent else ""
            verdict = (f"significant at α = {ALPHA}: larger than the seed-to-seed spread explains" if w.p < ALPHA
                       else f"not significant at α = {ALPHA}: within the seed-to-seed spread")
            notes.append(f"{what} Δ = {'+' if w.delta >= 0 else '-'}{_fmt(abs(w.delta), digits, percent)}{pts} "
                         f"(standard error {_fmt(w.se, digits, percent)}{pts}), Welch's t = {w.t:.2f}, "
                         f"df = {w.df:.1f}, two-sided p = {w.p:.2g}: {verdict}.")
    for i, m in enumerate(metrics):
        every = [v[i] for _, v in kept]
        if len(every) > 1 and len(set(every)) == 1:
            notes.append(f"Warning: {m} is {_fmt(every[0], digits, percent)}{unit} in all {len(every)} experiments: "
                         "its file was probably not rebuilt by the experiments' target (a stage outside it keeps "
                         "the baseline commit's value).")
    if left:
        notes.append("Left out: " + "; ".join(f"{n} ({why})" for n, why in left) + ".")
    return "\n".join(lines) + ("\n\n" + "\n\n".join(notes) if notes else "") + "\n"


def _read_rows(source: str | None) -> Any:
    if source is None:
        proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise _error(f"`dvc exp show --json` failed ({last}); run this in a DVC repository or pass --json FILE")
        text, what = proc.stdout, "`dvc exp show --json` output"
    elif source == "-":
        text, what = sys.stdin.read(), "stdin"
    else:
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise _error(f"cannot read --json {source}: {exc.strerror or exc}; pass the file `dvc exp show --json` "
                         "wrote") from None
        what = source
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(f"{what} is not JSON ({exc.msg} at line {exc.lineno}); pass what `dvc exp show --json` "
                     "printed") from None


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: print the table (and write it into --readme between the seedgrid markers)."""
    parser = argparse.ArgumentParser(prog="python -m mnistpipe.lab.seedgrid", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="`dvc exp show --json` output ('-' = stdin); default: run it")
    parser.add_argument("--metric", action="append", required=True,
                        help="KEY or FILE:KEY (dotted KEY; FILE may be a tail of the path); repeatable")
    parser.add_argument("--by", action="append", help="param defining a setting; repeatable (default: all that "
                                                      "vary except the seed)")
    parser.add_argument("--seed-key", default="seed", help="params key of the seed (default: seed)")
    parser.add_argument("--exp", action="append", help="only these experiments (names; repeatable or comma list)")
    parser.add_argument("--percent", action="store_true", help="show metrics x 100 (accuracies in %%)")
    parser.add_argument("--digits", type=int, help="decimals (default 4, or 2 with --percent)")
    parser.add_argument("--readme", metavar="FILE", help=f"also put the table between {START} and {END} in FILE")
    parser.add_argument("--summary", metavar="FILE", help="also write the grid of the one --metric as JSON (what the "
                                                           "report stage shows)")
    parser.add_argument("--commit", default="", help="the commit the experiments ran at, recorded in --summary")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    names = [n for item in args.exp or [] for n in item.split(",") if n]
    if args.summary and len(args.metric) != 1:
        raise _error(f"--summary holds one metric; pass one --metric, not {len(args.metric)}")
    grid = group(_read_rows(args.json), args.metric, by=args.by, seed_key=args.seed_key, names=names or None)
    table = render(grid, args.metric, seed_key=args.seed_key, percent=args.percent, digits=args.digits)
    if args.summary:
        from .. import io  # late: it loads torch, which only the written files need

        io.write_json(args.summary, {"commit": args.commit, "metric": args.metric[0],
                                     **summarise_grid(grid, seed_key=args.seed_key)})
    if args.readme:
        from .. import io  # late: it loads torch, which only this option needs

        try:
            with open(args.readme, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise _error(f"cannot read --readme {args.readme}: {exc.strerror or exc}") from None
        io.write_text(args.readme, replace_between(text, BLOCK, table, where=args.readme))
    print(table, end="")


if __name__ == "__main__":
    from ..runner import run_stage

    run_stage(main)
