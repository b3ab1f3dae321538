"""SIGKILL at the worst moments, and what the outputs look like right after it.

Four stages (train_baseline, train_dae, denoise, visualize) are killed, directly (`python stages/X.py`) and under
`dvc repro --force --single-item X`, eleven times in all. Each kill is aimed at one of two windows:

- "commit": the test hook (tests/hooks/pause_before_commit, MNISTPIPE_PAUSE_BEFORE_COMMIT=<marker>) makes the
  stage write <marker> (the outputs
  about to be replaced) and sleep right before it renames its finished temporaries into place; the test waits for
  the marker and kills the process group there.
- "random": a seeded random time inside the stage's computation, from its first temporary (training and its
  dvclive folder, the denoised tensors, the figures) to the commit, as measured by that stage's "commit" kill.

Right after every kill, each declared output of the stage is absent or the complete previous version (same
sha256 as before the kill, and it loads). The previous versions are made distinguishable first (`_plant`): the
tiny run is deterministic, so a stage that wrongly renamed an output into place would otherwise leave the very
same bytes. Where each kill landed is decided after it (the marker exists: write window; new temporaries exist:
computation), counted, and both windows must have been hit.

Then `dvc repro --no-run-cache` must recover (the run-cache would restore the tiny run's outputs, which it cannot
after a killed run of new params; DVC still checks out a stage whose dvc.lock entry matches from its cache): the
metrics, tensors and figures of the killed stages equal the uninterrupted run's (the session's tiny_repo), a
stage that ran leaves no temporary, the rest are git-ignored, and `dvc status` is clean.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

KILLED = ("train_baseline", "train_dae", "denoise", "visualize")
# (stage, how, aim). Direct kills first, while the planted previous versions are in place; then kills under dvc
# (which deletes a stage's outputs before running it), downstream first, so each stage still finds its inputs.
PLAN = (
    ("train_baseline", "python", "commit"),
    ("train_baseline", "python", "random"),
    ("train_dae", "python", "commit"),
    ("train_dae", "python", "random"),
    ("denoise", "python", "commit"),
    ("denoise", "python", "random"),
    ("visualize", "python", "commit"),
    ("visualize", "dvc", "random"),
    ("denoise", "dvc", "commit"),
    ("train_dae", "dvc", "random"),
    ("train_baseline", "dvc", "commit"),
)
WAIT_S = 240  # for the marker or the random moment; a stage of the tiny run takes seconds


def _files(repo: Path, rel: str) -> dict[str, str]:
    """{relative path: sha256} of the file `rel` or of every file under the folder `rel` ({} if absent)."""
    p = repo / rel
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
    return {f.relative_to(repo).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _plant(repo: Path, rel: str) -> None:
    """Make the current version of output file `rel` differ from what a rerun writes, keeping it loadable."""
    import torch

    path = repo / rel
    if path.suffix == ".pt":
        obj = torch.load(path, weights_only=True)
        obj["planted"] = 1  # checkpoints and tensor files are dicts; the stages ignore keys they do not read
        buf = io.BytesIO()
        torch.save(obj, buf)
        path.write_bytes(buf.getvalue())
    elif path.suffix == ".json":
        path.write_text(json.dumps({**json.loads(path.read_text()), "planted": True}, indent=2))
    elif path.suffix == ".png":
        from PIL import Image, PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("planted", "before the kills")
        with Image.open(path) as img:
            img.load()
            img.save(path, pnginfo=info)
    else:
        path.write_bytes(path.read_bytes() + b"\n")


def _loads(path: Path) -> None:
    import torch

    if path.suffix == ".pt":
        torch.load(path, weights_only=True)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as img:
            img.verify()
    else:
        path.read_text()


def _scratch_names(outs: list[str]) -> list[tuple[str, str]]:
    """(folder, name) of everything whose temporary can carry these outputs: each output and each folder above
    it (a dvclive folder metrics/X is written as a whole, carrying metrics/X/plots)."""
    return sorted({(p.parent.as_posix(), p.name) for rel in outs for p in (Path(rel), *Path(rel).parents)
                   if p != Path(".")})


def _scratch(repo: Path, names: list[tuple[str, str]]) -> set[str]:
    """The temporaries (`.NAME.*.tmp`) and set-aside previous versions (`.NAME.old`) of `names` in `repo`."""
    found = set()
    for folder, name in names:
        d = repo / folder
        esc = glob.escape(name)
        if d.is_dir():
            found.update(p.relative_to(repo).as_posix() for pattern in (f".{esc}.*.tmp", f".{esc}.old")
                         for p in d.glob(pattern))
    return found


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (dvc and the stage it runs) and make sure nothing of it is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of group {proc.pid} survived SIGKILL")


def _kill_once(helpers, repo: Path, stage: str, how: str, aim: str, *, marker: Path, window: float | None,
               rng: random.Random, log: Path) -> dict:
    """Start `stage`, kill it as aimed, check its outputs; return what happened (where, before, after, ...)."""
    outs = helpers.stage_outputs(repo, stage)
    names = _scratch_names(outs)
    before = {out: _files(repo, out) for out in outs}
    stale = _scratch(repo, names)
    args = ([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", stage] if how == "dvc"
            else [sys.executable, f"stages/{stage}.py"])
    with open(log, "wb") as err:
        proc = subprocess.Popen(args, cwd=repo, env=helpers.stage_env(repo, helpers.pause_env(repo, marker)),
                                stdout=err, stderr=subprocess.STDOUT, start_new_session=True)
    t_start = time.monotonic()
    t_first = kill_at = None
    try:
        while True:
            now = time.monotonic()
            assert proc.poll() is None, (f"{stage} ({how}) ended by itself with {proc.returncode} before the kill:"
                                         f"\n{log.read_text(errors='replace')[-3000:]}")
            assert now - t_start < WAIT_S, f"{stage} ({how}) reached neither window in {WAIT_S} s"
            if t_first is None and _scratch(repo, names) - stale:
                t_first = now
                if aim == "random":
                    kill_at = now + rng.uniform(0.1, 0.9) * (window or 0.2)
            if marker.exists() or (kill_at is not None and now >= kill_at):
                t_aimed = now
                break
            time.sleep(0.005)
    finally:
        _kill_group(proc)
    # Decided after the kill, so nothing can move on between the decision and the signal.
    where = ("write window" if marker.exists() else
             "training/computation" if _scratch(repo, names) - stale else "startup")
    after = {out: _files(repo, out) for out in outs}
    for out in outs:
        assert not after[out] or after[out] == before[out], (
            f"{stage} killed ({how}, {where}) left {out} neither absent nor its previous version:\n"
            f"before {before[out]}\nafter  {after[out]}")
        for rel in after[out]:
            _loads(repo / rel)
    listed = marker.read_text().splitlines() if marker.exists() else []
    if listed:
        uncovered = [o for o in outs if not any(o == p or o.startswith(p.rstrip("/") + "/") for p in listed)]
        assert not uncovered, f"{stage}: the commit marker {listed} does not cover the outputs {uncovered}"
    return {"stage": stage, "how": how, "aim": aim, "where": where, "absent": sum(not f for f in after.values()),
            "kept": sum(bool(f) for f in after.values()),
            "window": (t_aimed - t_first) if (aim == "commit" and t_first is not None) else None}


def _equal(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _differences(helpers, reference: Path, repo: Path, stages) -> list[str]:
    """Output files of `stages` that differ between the two repositories (timing values and files aside)."""
    import torch

    diffs = []
    for stage in stages:
        for out in helpers.stage_outputs(repo, stage):
            ref, got = _files(reference, out), _files(repo, out)
            if ref.keys() != got.keys():
                diffs.append(f"{out}: files {sorted(set(ref) ^ set(got))}")
                continue
            for rel in ref:
                a, b = reference / rel, repo / rel
                if b.name in helpers.TIMING_FILES:
                    continue
                if b.suffix == ".json":
                    same = helpers.read_metrics(a) == helpers.read_metrics(b)
                elif b.suffix == ".pt":
                    same = _equal(torch.load(a, weights_only=True), torch.load(b, weights_only=True))
                else:
                    same = a.read_bytes() == b.read_bytes()
                if not same:
                    diffs.append(rel)
    return diffs


def test_kills_leave_old_or_no_outputs_and_repro_recovers(tiny_repo, repo_copy, helpers, tmp_path):
    repo = repo_copy
    t0 = time.perf_counter()
    for stage in KILLED:
        for out in helpers.stage_outputs(repo, stage):
            for rel in _files(repo, out):
                _plant(repo, rel)
    rng = random.Random(20240611)
    windows: dict[str, float] = {}
    kills = []
    for n, (stage, how, aim) in enumerate(PLAN):
        t_kill = time.perf_counter()
        kill = _kill_once(helpers, repo, stage, how, aim, marker=tmp_path / f"marker{n}", window=windows.get(stage),
                          rng=rng, log=tmp_path / f"kill{n}.log")
        if kill["window"] is not None:
            windows.setdefault(stage, kill["window"])
        kills.append({**kill, "seconds": time.perf_counter() - t_kill})
    for k in kills:
        print(f"kill: {k['stage']:<15} {k['how']:<6} aimed {k['aim']:<6} landed {k['where']:<21} "
              f"outputs absent {k['absent']}, previous version {k['kept']} ({k['seconds']:.1f} s)")
    landed = {w: sum(k["where"] == w for k in kills) for w in ("training/computation", "write window", "startup")}
    summary = ", ".join(f"{w} {c}" for w, c in landed.items() if c)
    assert landed["write window"] >= 1 and landed["training/computation"] >= 1, f"windows hit: {summary}"
    assert sum(k["how"] == "dvc" for k in kills) >= 3 and len(kills) >= 10

    t_repro = time.perf_counter()
    proc = helpers.dvc(repo, "repro", "--no-run-cache")
    assert proc.returncode == 0, f"dvc repro after the kills failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ran = [s for s in KILLED if f"Running stage '{s}'" in proc.stdout]
    restored = [s for s in KILLED if f"Stage '{s}' is cached - skipping run" in proc.stdout]
    assert set(ran) | set(restored) == set(KILLED), f"dvc repro left some killed stage alone:\n{proc.stdout}"
    print(f"recovery: ran {ran}, checked out from the cache {restored} ({time.perf_counter() - t_repro:.1f} s)")
    diffs = _differences(helpers, tiny_repo, repo, KILLED)
    assert not diffs, f"after recovery, outputs differ from the uninterrupted run: {diffs}"
    # A stage that ran cleared what the kills left beside its outputs. One that DVC checked out from its cache
    # (dvc.lock still matched) did not run: its leftovers must be git-ignored until its next run removes them.
    leftovers = helpers.temp_files(repo)
    for stage in ran:
        mine = _scratch(repo, _scratch_names(helpers.stage_outputs(repo, stage)))
        assert not mine, f"{stage} ran but left {sorted(mine)}"
    for rel in leftovers:
        assert helpers.git(repo, "check-ignore", "-q", rel, check=False).returncode == 0, f"{rel} is not ignored"
    status = helpers.dvc(repo, "status", check=True)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    helpers.TIMINGS[f"kill tests: {len(kills)} kills ({summary}) + recovery"] = time.perf_counter() - t0
