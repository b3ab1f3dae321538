"""README's seed-averaged comparison, for real on the tiny pipeline: `scripts/seed_grid.sh` queues a 2-seed x
2-dropout grid of `train_baseline` with one `dvc exp run --queue -S seed=0,1 -S dropout=0,0.25`, runs it with
`dvc queue start -j 2`, waits and tabulates with `python -m mnistpipe.lab.seedgrid` into docs/seed-grid.md's seedgrid
block and the summary JSON the report stage shows. The table and the summary are checked against the metrics each
experiment committed, read straight from its git ref, and one queued experiment against a serial run of its params
with the same thread count: queued runs, two sharing the CPU, must not change a bit (metrics and checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import subprocess
import time
from pathlib import Path

import yaml


def _experiments(helpers, repo: Path) -> list[tuple[int, float, dict, str]]:
    """(seed, dropout, train_baseline metrics, MD5 of models/baseline.pt) of every finished experiment, from the
    params.yaml, metrics and dvc.lock it committed."""
    found = []
    for ref in helpers.git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/").stdout.split():
        if len(ref.split("/")) != 5 or ref.split("/")[2] in ("celery", "stash"):
            continue
        params = yaml.safe_load(helpers.git(repo, "show", f"{ref}:params.yaml").stdout)
        metrics = json.loads(helpers.git(repo, "show", f"{ref}:metrics/train_baseline/metrics.json").stdout)
        lock = yaml.safe_load(helpers.git(repo, "show", f"{ref}:dvc.lock").stdout)
        md5 = {o["path"]: o["md5"] for o in lock["stages"]["train_baseline"]["outs"]}["models/baseline.pt"]
        found.append((params["seed"], float(params["dropout"]), metrics, md5))
    return found


def _stop_queue(helpers, repo: Path) -> None:
    out = helpers.dvc(repo, "queue", "status").stdout
    active = [p[1] for p in (line.split() for line in out.splitlines())
              if len(p) >= 3 and p[-1] in ("Queued", "Running")]
    if active:
        helpers.dvc(repo, "queue", "kill", *active)
    helpers.dvc(repo, "queue", "stop")


def test_seed_grid_script_queues_the_product_and_tabulates_it(repo_copy, helpers):
    repo = repo_copy
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env = {"SEEDS": "0,1", "DROPOUTS": "0,0.25", "README": "docs/seed-grid.md",
           "SUMMARY": "benchmarks/seed-grid-dropout.json", **threads}
    t0 = time.perf_counter()
    try:
        proc = helpers.sh(["bash", "scripts/seed_grid.sh"], repo, env=env, timeout=400)
    except subprocess.TimeoutExpired:
        proc = None
    finally:
        _stop_queue(helpers, repo)
    helpers.TIMINGS["seed grid (2 seeds x 2 dropouts, -j 2)"] = time.perf_counter() - t0
    assert proc is not None, "scripts/seed_grid.sh did not finish within 400 s"
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "queued 4 experiments" in proc.stderr  # -S lists expand into their cartesian product

    runs = _experiments(helpers, repo)
    assert sorted((s, d) for s, d, _, _ in runs) == [(0, 0.0), (0, 0.25), (1, 0.0), (1, 0.25)], runs
    accs = {(s, d): m["val_acc"] for s, d, m, _ in runs}
    assert accs[0, 0.0] != accs[1, 0.0], f"another seed (another split) gave the same accuracy: {accs}"

    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| dropout | n | seeds | metrics/train_baseline/metrics.json:val_acc: mean ± std (%) |"
    for row, dropout in zip(rows[1:], (0.0, 0.25), strict=True):
        values = [accs[seed, dropout] for seed in (0, 1)]
        mean, std = statistics.fmean(values) * 100, statistics.stdev(values) * 100
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells == [f"{dropout:g}", "2", "0, 1", f"{mean:.2f} ± {std:.2f}"], (row, values)
    assert len(rows) == 3 and "Left out" not in proc.stdout
    assert "dropout=0.25 vs dropout=0, metrics/train_baseline/metrics.json:val_acc: " in proc.stdout
    page = (repo / "docs" / "seed-grid.md").read_text()
    assert proc.stdout.strip() in page and "not run yet" not in page

    grid = json.loads((repo / "benchmarks" / "seed-grid-dropout.json").read_text())
    assert grid["commit"] == helpers.git(repo, "rev-parse", "HEAD").stdout.strip()
    assert [float(g["params"]["dropout"]) for g in grid["settings"]] == [0.0, 0.25]
    for g in grid["settings"]:
        assert g["values"] == [accs[seed, float(g["params"]["dropout"])] for seed in g["seeds"]], g
    assert grid["shared_params"]["recipe.hidden"] == helpers.read_params(repo)["recipe"]["hidden"]

    # The experiment (seed 0, dropout 0) once more, serially in the workspace, with the queue's thread count.
    (metrics, md5), = [(m, h) for s, d, m, h in runs if (s, d) == (0, 0.0)]
    helpers.set_param(repo, "dropout", 0)
    rc, _, err = helpers.run_stage(repo, "train_baseline", env=threads)
    assert rc == 0, err[-3000:]
    assert helpers.read_metrics(repo / "metrics/train_baseline/metrics.json") == helpers.drop_timing(metrics)
    assert hashlib.md5((repo / "models/baseline.pt").read_bytes()).hexdigest() == md5, "queued and serial differ"
