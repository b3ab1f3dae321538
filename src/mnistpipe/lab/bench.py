"""Seed-averaged, fixed-schedule benchmark: pytorch/examples' MNIST trainer against this project's.

    python -m mnistpipe.lab.bench [--mnist DIR] [--params params.yaml] [--device auto] [--seeds 5] [--quick]
                                  [--parts P,..|--skip P,..] [--json out.json]
    python -m mnistpipe.lab.bench --select [--json benchmarks/select-cpu-2core.json]

The MNIST files come from --mnist, else from the folder the MNIST_MIRROR variable names. params.yaml gives the
autoencoder part its settings (train_dae, add_awgn.std) and the selection its validation split (download.val_size,
seed).

Three columns (see `bench_parts`): (a) the reference as published, (b) its network, optimiser and batch size in
this project's training loop, (c) this project's speed recipe. (a)/(b) is the engineering gain, (b)/(c) the
recipe's, (a)/(c) both. Schedules: 1-6 epochs for (a) and (b) (one 6-epoch run per seed, scored after each
epoch), 1-3 epochs for (c) (one run each). Every run trains on all 60,000 training images and is scored on the
10,000 test images only, with the training clock stopped; each schedule's final test accuracy and training time
are averaged over the seeds (mean +- sample standard deviation). "Time to X %" is the mean training time of the
shortest schedule whose MEAN test accuracy reaches X; a column that never does shows "-", and a ratio against it
is a bound taken from its longest schedule. The recipe was chosen by `--select` on a validation split of the
training images (`bench_parts.select`), never on the test set.

Each (column, seed, schedule) trains in a process of its own (`python -m mnistpipe.lab.bench_parts`), one after the
other, so no part runs on a heap another part fragmented or shares the CPU with it. Imports neither dvc, dvclive
nor optuna, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .. import train
from ..errors import PipelineError
from . import bench_parts
from .bench_parts import DEFAULT_CNN, DEFAULT_HP  # the recipe, also known as bench.DEFAULT_*
from .cli import mnist_source, read_params, run_cli

TARGETS = (0.990, 0.992)
COLUMNS = {"reference": "(a) reference as published", "refloop": "(b) ReferenceNet, our loop",
           "project": "(c) our recipe"}
PARTS = (*COLUMNS, "dae", "tsne")
RATIOS = {"engineering": ("reference", "refloop"), "recipe": ("refloop", "project"), "total": ("reference", "project")}
GOAL_FRACTION, GOAL_SPEEDUP = 0.1, 40.0  # (i) 99.2 % within 0.1 x a reference epoch; (ii) 40x faster to 99.0 %
QUICK_NOTE = "quick mode (tiny data): these timings support no claims"
REPO = Path(__file__).resolve().parents[3]  # the checkout whose commit a run records


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(by_schedule: dict[int, list[dict]]) -> list[dict]:
    """One row per schedule (epochs): the seeds' final test accuracies and training times, with mean and std."""
    rows = []
    for epochs in sorted(by_schedule):
        acc = [r["test_acc"] for r in by_schedule[epochs]]
        sec = [r["train_seconds"] for r in by_schedule[epochs]]
        (am, asd), (tm, tsd) = mean_std(acc), mean_std(sec)
        rows.append({"epochs": epochs, "test_acc": acc, "train_seconds": sec, "acc_mean": am, "acc_std": asd,
                     "time_mean": tm, "time_std": tsd})
    return rows


def time_to(rows: list[dict], target: float) -> float | None:
    """Mean training time of the shortest schedule whose mean test accuracy reaches `target`; None if none does."""
    return next((r["time_mean"] for r in sorted(rows, key=lambda r: r["epochs"]) if r["acc_mean"] >= target), None)


def ratio(slow: list[dict], fast: list[dict], target: float) -> dict | None:
    """time_to(slow) / time_to(fast) as {"value", "bound"}: bound ">" when `slow` never reaches the target (its
    longest schedule's time stands in), "<" when `fast` never does, "" when exact; None when neither does."""
    ts, tf = time_to(slow, target), time_to(fast, target)
    if ts is not None and tf is not None:
        return {"value": ts / tf, "bound": ""}
    if ts is None and tf is not None and slow:
        return {"value": slow[-1]["time_mean"] / tf, "bound": ">"}
    if tf is None and ts is not None and fast:
        return {"value": ts / fast[-1]["time_mean"], "bound": "<"}
    return None


def fmt_ratio(r: dict | None) -> str:
    """'12.3x', '>12.3x', '<12.3x' or '-'."""
    return "-" if r is None else f"{r['bound']}{r['value']:.1f}x"


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def evaluate_goals(columns: dict[str, list[dict]]) -> list[dict]:
    """The benchmark's goals (GOAL_FRACTION, GOAL_SPEEDUP, and the engineering gain alone), each {"id", "met"
    (True, False or None when not evaluated), "text"}."""
    ref, loop, ours = (columns.get(c) for c in COLUMNS)
    goals = []
    if ref and ours:
        t, epoch = time_to(ours, 0.992), ref[0]["time_mean"]
        met = t is not None and t <= GOAL_FRACTION * epoch
        goals.append({"id": "i", "met": met, "text": (
            f"(i) our 99.2 % time <= {GOAL_FRACTION} x the reference's one-epoch time: {'met' if met else 'not met'} "
            f"({_s(t)} s vs {GOAL_FRACTION} x {epoch:.1f} s = {GOAL_FRACTION * epoch:.1f} s)")})
        r = ratio(ref, ours, 0.990)
        met = r is not None and r["bound"] != "<" and r["value"] >= GOAL_SPEEDUP
        goals.append({"id": "ii", "met": met, "text": (
            f"(ii) time to 99.0 %, reference / ours >= {GOAL_SPEEDUP:.0f}x: {'met' if met else 'not met'} "
            f"({fmt_ratio(r)}; reference {_s(time_to(ref, 0.990))} s, ours {_s(time_to(ours, 0.990))} s)")})
    else:
        goals += [{"id": i, "met": None, "text": f"({i}) not evaluated: needs columns (a) and (c)"}
                  for i in ("i", "ii")]
    if ref and loop:
        per_target = ", ".join(f"{fmt_ratio(ratio(ref, loop, t))} to {100 * t:.1f} %" for t in TARGETS)
        goals.append({"id": "iii", "met": None, "text": (
            f"(iii) engineering alone, (a)/(b): {ref[0]['time_mean'] / loop[0]['time_mean']:.1f}x per first epoch, "
            f"{per_target}")})
    return goals


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU as the benchmark saw it; avx2/avx512f are None where /proc/cpuinfo has no flags (macOS, Windows)."""
    model, flags = None, None
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and flags is None:
                flags = set(value.split())
    except OSError:
        pass
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {"model": model or platform.processor() or platform.machine() or "unknown", "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "capability": capability,
            "avx2": None if flags is None else "avx2" in flags,
            "avx512f": None if flags is None else "avx512f" in flags, "torch": torch.__version__}


def provenance(device: str) -> dict:
    """Date, commit (with -dirty for uncommitted changes; None outside git), machine and device of a run."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    try:
        head = git("rev-parse", "--short", "HEAD")
        commit = head.stdout.strip() + ("-dirty" if git("diff", "--quiet", "HEAD").returncode else "") \
            if head.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    dev = train.resolve_device(device)
    return {"date": datetime.date.today().isoformat(), "commit": commit, "machine": cpu_info(),
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"}


def _run_part(module: str, args: list[str], out: Path) -> dict:
    """Run `python -m module args --json out` in a process of its own; its JSON result."""
    cmd = [sys.executable, "-m", module, *args, "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PipelineError(f"benchmark part failed (exit {done.returncode}): {last}; rerun it alone: {' '.join(cmd)}")
    return json.loads(out.read_text())


def run(args: argparse.Namespace, parts: list[str], *, dae: dict, noise_std: float) -> dict:
    """Every (column, seed, schedule) part in turn, seeds outermost, then the autoencoder and t-SNE parts.

    `dae` is the autoencoder part's settings (`bench_parts.dae_settings`), `noise_std` its AWGN level."""
    seeds = list(range(args.seeds))
    common = ["--mnist", args.mnist, "--device", args.device, "--train-size", str(args.train_size),
              "--test-size", str(args.test_size)]
    by_column: dict[str, dict[int, list[dict]]] = {c: {} for c in COLUMNS if c in parts}
    out: dict = {"kind": "bench", "quick": args.quick, **provenance(args.device), "seeds": seeds,
                 "targets": list(TARGETS), "recipe": {"cnn": DEFAULT_CNN.model_dump(mode="json"), "hp": DEFAULT_HP}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for column in by_column:
                for epochs in ([args.ref_epochs] if column != "project" else range(1, args.epochs + 1)):
                    res = _run_part("mnistpipe.lab.bench_parts", [column, *common, "--seed", str(seed), "--epochs",
                                                              str(epochs)], Path(tmp) / "part.json")
                    curve = res["curve"] if column != "project" else res["curve"][-1:]
                    for rec in curve:
                        by_column[column].setdefault(epochs if column == "project" else rec["epoch"], []).append(rec)
                    out.update(train_size=res["train_size"], test_size=res["test_size"], threads=res["threads"])
                    last = res["curve"][-1]
                    print(f"{column} seed {seed}, {epochs} epoch(s): {100 * last['test_acc']:.2f} % in "
                          f"{last['train_seconds']:.1f} s", file=sys.stderr)
        if "dae" in parts:
            out["dae"] = _run_part("mnistpipe.lab.bench_parts", ["dae", *common, "--dae-size", str(args.dae_size),
                                                                 "--dae", json.dumps(dae), "--noise-std",
                                                                 str(noise_std)], Path(tmp) / "dae.json")
        if "tsne" in parts:
            out["tsne"] = _run_part("mnistpipe.lab.bench_tsne", ["--mnist", args.mnist, "--n", str(args.tsne_size)],
                                    Path(tmp) / "tsne.json")
    columns = {c: summarise(v) for c, v in by_column.items()}
    out["columns"] = {c: {"label": COLUMNS[c], "schedules": rows} for c, rows in columns.items()}
    out["time_to"] = {c: {f"{t:.3f}": time_to(rows, t) for t in TARGETS} for c, rows in columns.items()}
    out["ratios"] = {f"{t:.3f}": {name: ratio(columns[a], columns[b], t) for name, (a, b) in RATIOS.items()
                                  if a in columns and b in columns} for t in TARGETS}
    out["goals"] = evaluate_goals(columns)
    return out


def _machine_lines(out: dict) -> list[str]:
    m = out["machine"]

    def flag(v):
        return "unknown" if v is None else ("yes" if v else "no")
    return [f"machine: {m['model']}, {m['cores']} cores, torch {m['torch']} (threads: {m['torch_threads']}), CPU "
            f"capability {m['capability']} (avx2 {flag(m['avx2'])}, avx512f {flag(m['avx512f'])}); device "
            f"{out['device']}", f"date {out['date']}, commit {out['commit'] or 'unknown'}"]


def format_table(out: dict) -> str:
    """The benchmark's plain-text tables and goals (and the t-SNE part's table, from `bench_tsne`)."""
    rows = [QUICK_NOTE] if out.get("quick") else []
    rows += _machine_lines(out)
    cols = out.get("columns", {})
    if cols:
        rows += [f"{out['train_size']} training / {out['test_size']} test images, {len(out['seeds'])} seeds per "
                 "schedule; final test accuracy and training time of each fixed schedule, mean +- std over seeds:",
                 f"{'column':<30}{'epochs':>7}{'test acc (%)':>18}{'train time (s)':>20}"]
        for col in cols.values():
            rows += [f"{col['label']:<30}{r['epochs']:>7}{100 * r['acc_mean']:>11.2f} +- {100 * r['acc_std']:.2f}"
                     f"{r['time_mean']:>12,.1f} +- {r['time_std']:.1f}" for r in col["schedules"]]
        rows += ["time to target = mean time of the shortest schedule whose mean test accuracy reaches it:",
                 f"{'target':<8}" + "".join(f"{c[:3] + ' (s)':>9}" for c in (v["label"] for v in cols.values()))
                 + f"{'(a)/(b) engineering':>21}{'(b)/(c) recipe':>16}{'(a)/(c) total':>15}"]
        for t in TARGETS:
            key = f"{t:.3f}"
            rows.append(f"{100 * t:.1f}%".ljust(8) + "".join(f"{_s(out['time_to'][c][key]):>9}" for c in cols)
                        + "".join(f"{fmt_ratio(out['ratios'][key].get(n)):>{w}}"
                                  for n, w in (("engineering", 21), ("recipe", 16), ("total", 15))))
        rows += ["goals:", *(g["text"] for g in out["goals"])]
    if "dae" in out:
        rows.append(f"autoencoder training: {out['dae']['images_per_s']:,.1f} images/s (one epoch, batch "
                    f"{out['dae']['batch_size']})")
    text = "\n".join(rows)
    if "tsne" in out:
        from . import bench_tsne  # the t-SNE part's own module formats its results

        text += "\n" + bench_tsne.format_table(out["tsne"])
    return text


def format_select(out: dict) -> str:
    """The selection's candidates and picks as plain text."""
    rows = [QUICK_NOTE] if out.get("quick") else []
    rows += _machine_lines(out) + [
        f"selection on {out['val_size']} validation images (training on {out['train_size']}), seeds {out['seeds']}:",
        f"{'batch':>6}{'peak lr':>9}{'epochs':>7}{'val acc (%)':>18}"]
    rows += [f"{c['batch_size']:>6}{c['lr']:>9}{c['epochs']:>7}{100 * c['val_acc_mean']:>11.2f} +- "
             f"{100 * c['val_acc_std']:.2f}" for c in out["candidates"]]
    for key, c in out["picks"].items():
        rows.append(f"pick for {100 * float(key):.1f} %: " + ("none reaches it" if c is None else
                    f"batch {c['batch_size']}, lr {c['lr']}, {c['epochs']} epoch(s)"))
    rows.append("rule: " + out["rule"])
    rows.append("no candidate reaches a target: widen bench_parts.SELECT_GRID or SELECT_EPOCHS"
                if out["recipe"] is None else "bench.DEFAULT_HP " + (
                    "is this pick" if out["matches_default"] else
                    "differs from this pick: set bench_parts.DEFAULT_HP to it and rerun the benchmark"))
    return "\n".join(rows)


def _names(text: str) -> set[str]:
    names = set(filter(None, text.split(",")))
    if names - set(PARTS):
        raise PipelineError(f"unknown benchmark part(s) {sorted(names - set(PARTS))}; choose from {', '.join(PARTS)}")
    return names


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (or, with --select, the recipe selection), print its table, optionally write JSON."""
    ap = argparse.ArgumentParser(prog="python -m mnistpipe.lab.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", help="directory or URL with the MNIST .gz files (default: $MNIST_MIRROR)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), help="the pipeline's params file")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="tiny CI run: 2,000 / 1,000 images, 2 seeds, short schedules")
    ap.add_argument("--select", action="store_true", help="choose the recipe on the validation split instead")
    ap.add_argument("--seeds", type=int, help="seeds per schedule (default 5, quick 2; selection: 3, quick 2)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of parts to run: {','.join(PARTS)}")
    ap.add_argument("--skip", default="", help="comma list of parts to skip")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    q = args.quick
    args.seeds = args.seeds or (2 if q else 5 if not args.select else len(bench_parts.SELECT_SEEDS))
    if args.seeds < 1:
        raise PipelineError(f"--seeds {args.seeds}: need at least 1 seed; pass --seeds 5")
    args.train_size, args.test_size = (2000, 1000) if q else (60000, 10000)
    args.ref_epochs, args.epochs = (2, 1) if q else (6, 3)
    args.dae_size, args.tsne_size = (256, 300) if q else (10000, 10000)
    parts = [p for p in PARTS if p in _names(args.parts) - _names(args.skip)]
    args.mnist = mnist_source(args.mnist)
    params = read_params(args.params)
    if args.select:
        x, y, _, _ = bench_parts.load_mnist(args.mnist)
        sel = bench_parts.select(x, y, val_size=1000 if q else params.download.val_size, split_seed=params.seed,
                                 seeds=[100 + i for i in range(args.seeds)], device=args.device,
                                 log=lambda line: print(line, file=sys.stderr),
                                 **(dict(grid=bench_parts.SELECT_GRID[:2], epochs=(1,), limit=3000) if q else {}))
        out = {"kind": "select", "quick": q, **provenance(args.device), **sel}
        text = format_select(out)
    else:
        out = run(args, parts, dae=bench_parts.dae_settings(params), noise_std=params.add_awgn.std)
        text = format_table(out)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    run_cli(main)
