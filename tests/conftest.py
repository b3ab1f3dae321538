"""Shared fixtures for the pipeline and stage tests: a tiny, fully reproduced copy of the repository.

`tiny_repo` (session scope) copies the repository's tracked and untracked-but-not-ignored files into a temporary
directory, makes it a git repository, shrinks params.yaml with `tiny_params`, runs `dvc repro` once and commits the
result. Tests never change it for good: destructive tests work on their own copy (`repo_copy`), and `rerun_repo`
is a second copy in which every stage script has been run once more, directly (for the smoke and determinism
tests).

Helpers for test modules in sub-folders come through the `helpers` fixture (this module): `import conftest` is
ambiguous there because tests/unit has a conftest.py of its own.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
MIRROR_ENV = "MNIST_MIRROR"
# Metrics that measure time: they differ between two identical runs by nature.
TIMING_KEYS = frozenset({"train_seconds", "search_seconds", "user_attrs_train_seconds", "datetime_start",
                         "datetime_complete", "duration"})
# Output files drawn from timings (dvclive's per-epoch seconds, visualize's cost-vs-accuracy bars, and the study's
# "Accuracy and training time" table in report/README.md and report/index.html).
TIMING_FILES = frozenset({"train_seconds.tsv", "comparison.png", "README.md", "index.html"})
# Wall-clock seconds of the expensive steps, printed at the end of the session.
TIMINGS: dict[str, float] = {}
# Environment variables that must not leak from the caller into the stages (a debugging switch changes stderr,
# a git or dvc variable would point the commands at the wrong repository, a mirror variable other than
# MNIST_MIRROR would add a mirror behind the one a test breaks on purpose).
_SCRUB = ("MNISTPIPE_TRACEBACK", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "DVC_EXP_NAME", "DVC_ROOT",
          "DVC_EXP_BASELINE_REV", "DVC_STAGE", "MNISTPIPE_PAUSE_BEFORE_COMMIT", "MNIST_MIRROR_ONLY",
          "DATASET_MIRROR", "DATASET_MIRROR_ONLY", "FASHION_MNIST_MIRROR", "FASHION_MNIST_MIRROR_ONLY",
          "KMNIST_MIRROR", "KMNIST_MIRROR_ONLY")

# Values of the tiny run, by key path; a key is only set where params.yaml already has it.
TINY = {
    ("download", "train_limit"): 700,
    ("download", "val_size"): 100,
    ("download", "test_limit"): 200,
    ("epochs",): 1,
    ("batch_size",): 64,
    ("tune_cnn", "budget"): 2,  # 2 passes of 1-epoch trials
    ("tune_cnn", "n_trials"): 2,
    ("tune_cnn", "trial_train_size"): 300,
    ("tune_cnn", "space", "epochs"): {"low": 1, "high": 1},
    ("recipe", "channels"): [8, 16],
    ("recipe", "max_shift"): 1,
    ("train_on_noisy", "epochs"): 1,
    ("train_on_denoised", "epochs"): 1,
    ("train_dae", "epochs"): 1,
    ("train_dae", "width"): 4,
    ("train_dae", "train_size"): 300,  # 300 // 64 = exactly 4 optimizer steps: OneCycleLR's edge case
    ("train_dae", "batch_size"): 64,
    ("visualize", "tsne_size"): 40,
    ("visualize", "perplexity"): 5,
    ("evaluate", "n_misclassified"): 8,
    ("robustness", "stds"): [0.0, 0.4],
    # Pinned to the CPU: the tiny run is then reproducible (the determinism test compares two runs) and the same
    # on a GPU machine. test_smoke.py::test_device_auto checks the default `auto`.
    ("device",): "cpu",
}


# ----------------------------------------------------------------------------------------------------------------
# environment and commands


def mirror_dir() -> Path:
    """The local MNIST mirror: $MNIST_MIRROR when set, else `<repo root>/../shared/datasets/mnist`."""
    return Path(os.environ.get(MIRROR_ENV, "").strip() or REPO_ROOT.parent / "shared" / "datasets" / "mnist").resolve()


def in_ci() -> bool:
    """True under CI (`CI` set to anything but empty, 0, false or no), where no test may skip."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need(condition: object, reason: str) -> None:
    """Stop the test unless `condition` holds: a skip with `reason` locally, a failure with it under CI.

    The one way for a test to give up for want of something (the MNIST mirror, Chromium, git): a CI run must
    exercise every test, so there a missing tool is an error of the CI machine, reported as such.
    """
    if condition:
        return
    if in_ci():
        pytest.fail(f"cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require_mirror() -> Path:
    """The local MNIST mirror holding the four .gz files (see `need` for when it is missing)."""
    path = mirror_dir()
    missing = [n for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                           "t10k-labels-idx1-ubyte.gz") if not (path / n).is_file()]
    need(not missing, f"MNIST mirror {path} lacks {', '.join(missing)} (set {MIRROR_ENV} to a directory of the "
                      "four MNIST .gz files)")
    return path


IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def write_tiny_mirror(folder: Path, *, n_train: int = 12, n_test: int = 6, seed: int = 0) -> dict[str, bytes]:
    """A tiny MNIST-format dataset, generated: the four gzipped IDX files written into `folder` (created), with
    random 28x28 uint8 images and labels counting through 0-9 from a seeded start. Returns the decompressed bytes
    of each file by key (train_images, train_labels, test_images, test_labels)."""
    rng = random.Random(seed)
    out = {}
    for part, n in (("train", n_train), ("test", n_test)):
        start = rng.randrange(10)
        out[f"{part}_images"] = struct.pack(">IIII", 0x803, n, 28, 28) + rng.randbytes(n * 28 * 28)
        out[f"{part}_labels"] = struct.pack(">II", 0x801, n) + bytes((start + i) % 10 for i in range(n))
    folder.mkdir(parents=True, exist_ok=True)
    for key, raw in out.items():
        (folder / f"{IDX_FILES[key]}.gz").write_bytes(gzip.compress(raw, mtime=0))
    return out


_CLOSED_PORT: list[socket.socket] = []


def closed_port() -> int:
    """A local TCP port that refuses every connection for the whole session.

    The socket is bound but never listens, so connections to it are refused and no other process can take the
    port over while the session holds it.
    """
    if not _CLOSED_PORT:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        _CLOSED_PORT.append(sock)
    return _CLOSED_PORT[0].getsockname()[1]


def offline_env(port: int | None = None) -> dict[str, str]:
    """Environment that sends every http and https request of urllib to a proxy at 127.0.0.1:`port`, by default
    a closed port: no public host can be reached, whatever the machine's network (tests/test_no_skips.py checks
    that urllib honours it)."""
    proxy = f"http://127.0.0.1:{closed_port() if port is None else port}"
    return {**{k: proxy for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")},
            "no_proxy": "", "NO_PROXY": ""}


def stage_env(repo: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for dvc and the stages of `repo`.

    The test's python comes first on PATH (dvc.yaml runs `python stages/...`), MNIST_MIRROR points to the local
    mirror and `repo`/src comes first on PYTHONPATH (a copy runs its own code, not the editable install's). Thread
    settings are left as they are (OMP_NUM_THREADS / MKL_NUM_THREADS if the caller sets them, else torch's default
    of all cores), as in a `dvc repro` typed by hand: the determinism tests then check the thread count the
    pipeline really runs with, not a single-threaded special case.
    """
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env[MIRROR_ENV] = str(mirror_dir())
    if repo is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(repo).resolve() / "src"),
                                                          env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


# The fault-injection hook (a sitecustomize) that pauses a process right before it renames its outputs.
PAUSE_HOOK = REPO_ROOT / "tests" / "hooks" / "pause_before_commit"
PAUSE_ENV = "MNISTPIPE_PAUSE_BEFORE_COMMIT"


def pause_env(repo: Path | None, marker: Path) -> dict[str, str]:
    """Extra environment that makes a stage (run in `repo`, or any process when None) write `marker` and sleep
    right before it renames an output (see tests/hooks/pause_before_commit/sitecustomize.py)."""
    first = [str(Path(repo).resolve() / "src")] if repo is not None else []
    return {PAUSE_ENV: str(marker), "PYTHONPATH": os.pathsep.join(filter(None, [*first, str(PAUSE_HOOK),
                                                                                os.environ.get("PYTHONPATH")]))}


def pipeline_threads() -> dict[str, str]:
    """OMP_NUM_THREADS and MKL_NUM_THREADS pinned to the count a stage uses in the stage environment (torch asked in
    a fresh process), for tests that compare runs made in different ways (queued vs serial)."""
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                          env=stage_env(), capture_output=True, text=True, check=True)
    n = proc.stdout.strip()
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}


def sh(args: list[str], cwd: Path, *, env: dict[str, str] | None = None, check: bool = False,
       timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command (list form) in `cwd` with the stage environment; return the CompletedProcess.

    stdout/stderr are decoded as UTF-8 without newline translation, so a carriage return (a progress bar redrawn
    in place) stays a `\r` inside its line instead of becoming a line of its own.
    """
    proc = subprocess.run(args, cwd=cwd, env=stage_env(cwd, env), capture_output=True, timeout=timeout)
    proc.stdout = proc.stdout.decode("utf-8", errors="replace")
    proc.stderr = proc.stderr.decode("utf-8", errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                             f"\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def dvc(repo: Path, *args: str, check: bool = False, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `dvc <args>` in `repo` with the virtualenv's dvc (`python -m dvc`)."""
    return sh([sys.executable, "-m", "dvc", *args], Path(repo), env=env, check=check, timeout=timeout)


def start_queue(repo: Path, jobs: int, env: dict[str, str] | None = None) -> None:
    """`dvc queue start -j jobs` in `repo`, its output in a file rather than a pipe: the worker it leaves behind
    inherits that output, and a pipe would keep `subprocess.run` waiting for as long as the worker lives."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)], cwd=repo,
                              env=stage_env(repo, env), stdout=out, stderr=subprocess.STDOUT, timeout=120)
        out.seek(0)
        assert proc.returncode == 0, f"dvc queue start failed:\n{out.read().decode(errors='replace')[-3000:]}"


def stop_queue(repo: Path) -> None:
    """`dvc queue stop`, then end every queue worker of `repo` still alive (by its pid file).

    A DVC worker told to shut down on an empty queue while its task still runs ("monitor: shutting down due to
    empty queue" before the task's end in its log) was seen to live on after the task, idle, for good."""
    try:
        dvc(repo, "queue", "stop", timeout=60)
    except subprocess.TimeoutExpired:
        pass
    for pidfile in (Path(repo) / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
        except (ValueError, IndexError, OSError):
            pass  # gone already, or no pid in the file


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["git", "-c", "user.email=tests@example.invalid", "-c", "user.name=tests", "-c", "commit.gpgsign=false",
               "-c", "init.defaultBranch=main", *args], Path(repo), check=check)


def run_stage(repo: Path, stage: str, env: dict[str, str] | None = None,
              timeout: float = 600) -> tuple[int, str, str]:
    """Run `python stages/<stage>.py` in `repo`; return (returncode, stdout, stderr)."""
    proc = sh([sys.executable, f"stages/{stage}.py"], Path(repo), env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


# ----------------------------------------------------------------------------------------------------------------
# params


def tiny_params(path: str | os.PathLike) -> dict:
    """Rewrite the params file at `path` for a tiny, fast run (only keys that exist); return the new params."""
    path = Path(path)
    params = yaml.safe_load(path.read_text())
    for keys, value in TINY.items():
        node = params
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def read_params(repo: Path) -> dict:
    return yaml.safe_load((Path(repo) / "params.yaml").read_text())


def edit_params(repo: Path, edit) -> None:
    """Load `repo`/params.yaml, let `edit(params)` change it in place, write it back."""
    params = read_params(repo)
    edit(params)
    (Path(repo) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def set_param(repo: Path, dotted: str, value) -> None:
    """Set one key (dotted path, e.g. `train_dae.width`) in `repo`/params.yaml, keeping everything else."""
    *parents, last = dotted.split(".")

    def edit(params: dict) -> None:
        node = params
        for key in parents:
            node = node[key]
        node[last] = value

    edit_params(repo, edit)


# ----------------------------------------------------------------------------------------------------------------
# dvc.yaml


def dvc_stages(repo: Path) -> dict:
    """The `stages` mapping of `repo`/dvc.yaml, in file order."""
    return yaml.safe_load((Path(repo) / "dvc.yaml").read_text())["stages"]


def _paths(entries) -> list[str]:
    out = []
    for entry in entries or []:
        out.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return out


def stage_outputs(repo: Path, stage: str) -> list[str]:
    """Every out, metric and plot path that dvc.yaml declares for `stage` ([] for a stage it does not list)."""
    spec = dvc_stages(repo).get(stage) or {}
    return _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots"))


def stage_metrics(repo: Path, stage: str) -> list[str]:
    return _paths((dvc_stages(repo).get(stage) or {}).get("metrics"))


def all_metrics(repo: Path) -> list[str]:
    return [m for stage in dvc_stages(repo) for m in stage_metrics(repo, stage)]


def smoke_stages(repo: Path) -> list[str]:
    """The stages of dvc.yaml, in order."""
    return list(dvc_stages(repo))


# ----------------------------------------------------------------------------------------------------------------
# files


def project_files(root: Path) -> list[str]:
    """Tracked files plus untracked files that git does not ignore (the working-tree contents)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


def snapshot(repo: Path, paths) -> dict[str, tuple[int, str]]:
    """{relative path: (mtime_ns, sha256)} of every file at or under `paths` (files or folders)."""
    repo = Path(repo)
    snap = {}
    for rel in paths:
        p = repo / rel
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            snap[f.relative_to(repo).as_posix()] = (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    return snap


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def drop_timing(obj):
    """`obj` (nested dicts/lists) without the timing keys, at any depth."""
    if isinstance(obj, dict):
        return {k: drop_timing(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return type(obj)(drop_timing(v) for v in obj)
    return obj


def read_metrics(path: Path) -> dict:
    """A metrics JSON file without its timing keys."""
    return drop_timing(json.loads(Path(path).read_text()))


def numbers(obj, prefix: str = ""):
    """(dotted key, value) of every number in nested dicts/lists."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, f"{prefix}{k}.")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{prefix}{i}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix.rstrip("."), obj


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def temp_files(repo: Path) -> list[str]:
    """Leftovers of atomic writes (`.*.tmp` files or folders, `.*.old` folders) outside .git and .dvc."""
    repo = Path(repo)
    found = set()
    for pattern in (".*.tmp", ".*.old"):
        for p in repo.rglob(pattern):
            rel = p.relative_to(repo)
            if rel.parts[0] not in (".git", ".dvc"):
                found.add(rel.as_posix())
    return sorted(found)


def copy_repo(src: Path, dest: Path) -> Path:
    """A full copy of a repository directory (working tree, .git, .dvc with its cache) for destructive tests."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def one_line_error(stderr: str, *needles: str) -> str:
    """Assert that `stderr` is exactly one line starting with `error:` and containing every needle; return it."""
    lines = stderr.rstrip("\n").split("\n")
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("error: "), f"the stderr line does not start with 'error: ': {line[:600]!r}"
    assert "\r" not in line, f"the stderr line holds carriage returns (redrawn progress output?): {line[:600]!r}"
    for needle in needles:
        assert needle in line, f"{needle!r} not named in the error line: {line!r}"
    return line


# ----------------------------------------------------------------------------------------------------------------
# imports: which project files a stage really ran

RECORD_ENV = "MNISTPIPE_RECORD_IMPORTS"
# sitecustomize.py for the stage runs of `rerun_repo`: Python imports it at start-up from PYTHONPATH, and at exit
# (after everything else, atexit being last-in first-out) it writes the file of every module loaded, lazy
# imports inside functions included, to <$MNISTPIPE_RECORD_IMPORTS>/<pid>.txt. Child Python processes (workers)
# inherit the variable and write their own file. A process ended by a signal or os._exit records nothing.
IMPORT_RECORDER = """\
import atexit
import importlib.util
import os
import sys

FOLDER = os.environ.get("MNISTPIPE_RECORD_IMPORTS", "")
OPENED = set()  # files opened for reading (real paths)
READ = set()  # params keys the stage read after loading params.yaml (dotted; '*' = the whole file)


def _audit(event, args):
    if event != "open" or not args or not isinstance(args[0], (str, bytes)):
        return
    try:
        mode, flags = args[1], args[2]
        reading = ("r" in mode and "+" not in mode) if isinstance(mode, str) else (flags & os.O_ACCMODE) == os.O_RDONLY
        if reading:
            OPENED.add(os.path.realpath(os.fsdecode(args[0])))
    except Exception:
        pass


def _watch(module):
    # Every field read of a params section (model_dump of one: the whole section) once params.validate returned.
    Params, Strict, validate = module.Params, module._Strict, module.validate
    where, live = {}, [False]

    def prefix(obj):
        return "" if isinstance(obj, Params) else where.get(id(obj))

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        if live[0] and not name.startswith("_") and name in type(self).model_fields:
            pre = prefix(self)
            if pre is not None:
                if isinstance(value, Strict):
                    where[id(value)] = f"{pre}{name}."
                else:
                    READ.add(pre + name)
        return value

    def model_dump(self, *args, **kwargs):
        pre = prefix(self) if live[0] else None
        if pre is not None:
            READ.add(pre.rstrip(".") or "*")
        return Strict.__base__.model_dump(self, *args, **kwargs)

    def watched_validate(*args, **kwargs):
        out = validate(*args, **kwargs)
        live[0] = True
        return out

    Strict.__getattribute__, Strict.model_dump, module.validate = getattribute, model_dump, watched_validate


class _ParamsWatcher:
    def find_spec(self, name, path=None, target=None):
        if name != "mnistpipe.params":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _watch(module)

        spec.loader.exec_module = exec_module
        return spec


def _record():
    files = {os.path.realpath(getattr(m, "__file__", None) or "") for m in list(sys.modules.values())}
    os.makedirs(FOLDER, exist_ok=True)
    for kind, lines in (("imports", (f for f in files if f.endswith(".py"))), ("opened", OPENED), ("params", READ)):
        with open(os.path.join(FOLDER, f"{os.getpid()}.{kind}.txt"), "w", encoding="utf-8") as out:
            out.write("\\n".join(sorted(lines)))


if FOLDER:
    sys.addaudithook(_audit)
    sys.meta_path.insert(0, _ParamsWatcher())
    atexit.register(_record)
"""
PROJECT_CODE = ("stages/", "src/mnistpipe/")


def project_code(root: Path, files) -> set[str]:
    """The files among `files` (absolute paths) that are project code under `root`, relative to it."""
    root = Path(root).resolve()
    out = set()
    for f in files:
        try:
            rel = Path(f).resolve().relative_to(root).as_posix()
        except ValueError:
            continue
        if rel.startswith(PROJECT_CODE):
            out.add(rel)
    return out


def recorded(folder: Path, kind: str) -> set[str]:
    """What IMPORT_RECORDER listed in `folder` over every process: `kind` imports (module files), opened (files
    opened for reading) or params (keys read)."""
    return {line for f in sorted(Path(folder).glob(f"*.{kind}.txt"))
            for line in f.read_text(encoding="utf-8").splitlines() if line}


def recorded_imports(root: Path, folder: Path) -> list[str]:
    """Project files (relative to `root`) that IMPORT_RECORDER listed in `folder`, over every process."""
    return sorted(project_code(root, recorded(folder, "imports")))


def foreign_modules(root: Path, folder: Path) -> list[str]:
    """mnistpipe modules that the recorded processes loaded from outside `root` (an installed or editable copy that
    shadows the repository's own src/)."""
    root = Path(root).resolve()
    return sorted(f for f in recorded(folder, "imports")
                  if f"{os.sep}mnistpipe{os.sep}" in f and not Path(f).is_relative_to(root))


def opened_files(root: Path, folder: Path) -> list[str]:
    """Files under `root` (relative to it), other than code, that the recorded processes opened for reading."""
    root = Path(root).resolve()
    out = set()
    for f in recorded(folder, "opened"):
        p = Path(f)
        if p.is_relative_to(root) and p.is_file():
            rel = p.relative_to(root).as_posix()
            # Dot files are DVC's and git's own (.gitignore, .dvcignore, dvclive reads both), params.yaml and
            # dvc.yaml the pipeline's definition: none is a data dependency.
            if not (rel.startswith(PROJECT_CODE) or any(part.startswith(".") for part in p.relative_to(root).parts)
                    or rel in ("params.yaml", "dvc.yaml")):
                out.add(rel)
    return sorted(out)


# ----------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """A committed copy of the repository with tiny params, reproduced once with `dvc repro`; do not modify.

    The reproduced state (dvc.lock, .gitignore entries and the uncached metrics) is committed too, so experiments
    (`dvc exp run`, queued ones included) start from a clean, complete baseline.
    """
    require_mirror()
    repo = tmp_path_factory.mktemp("tiny") / "repo"
    repo.mkdir()
    for rel in project_files(REPO_ROOT):
        dest = repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest)
    tiny_params(repo / "params.yaml")
    git(repo, "init", "-q")
    # A local identity: dvc exp commits experiments with the repository's git config.
    git(repo, "config", "user.email", "tests@example.invalid")
    git(repo, "config", "user.name", "tests")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny copy")
    t0 = time.perf_counter()
    proc = dvc(repo, "repro")
    TIMINGS["tiny_repo: dvc repro"] = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"dvc repro of the tiny copy failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-5000:]}")
    # A failed repro rolls back the .gitignore entries of the stages that did run; after a good one the outputs
    # must all be ignored, or the commit below would put them into git.
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny repro")
    return repo


@pytest.fixture
def repo_copy(tiny_repo, tmp_path):
    """A private copy of the reproduced tiny repository that a test may change or break.

    Removed after the test (each copy holds ~50 MB with its DVC cache); set MNISTPIPE_KEEP_TEST_REPOS=1 to keep it.
    """
    repo = copy_repo(tiny_repo, tmp_path / "repo")
    yield repo
    if os.environ.get("MNISTPIPE_KEEP_TEST_REPOS", "") in ("", "0"):
        shutil.rmtree(repo, ignore_errors=True)


@pytest.fixture(scope="session")
def rerun_repo(tiny_repo, tmp_path_factory):
    """A copy of `tiny_repo` in which every stage script (see `smoke_stages`) was run once more, directly, in order.

    Returns (repo, results) with results[stage] = {rc, stdout, stderr, before, after, seconds, imports, foreign,
    opened, params}, before/after being snapshots of the stage's declared outputs, and what the stage's Python
    processes did (see IMPORT_RECORDER): imports the project files (stages/..., src/mnistpipe/...) they loaded, lazy
    imports included; foreign the mnistpipe modules loaded from outside the copy; opened the other files of the copy
    they opened for reading; params the params keys they read.
    """
    repo = copy_repo(tiny_repo, tmp_path_factory.mktemp("rerun") / "repo")
    hook = tmp_path_factory.mktemp("import_hook")
    (hook / "sitecustomize.py").write_text(IMPORT_RECORDER)
    records = tmp_path_factory.mktemp("imports")
    pythonpath = os.pathsep.join(filter(None, [str(repo.resolve() / "src"), str(hook), os.environ.get("PYTHONPATH")]))
    results = {}
    t_all = time.perf_counter()
    for stage in smoke_stages(repo):
        outs = stage_outputs(repo, stage)
        before = snapshot(repo, outs)
        time.sleep(0.01)  # mtimes of rewritten files must differ even on a coarse clock
        t0 = time.perf_counter()
        rc, out, err = run_stage(repo, stage, env={"PYTHONPATH": pythonpath, RECORD_ENV: str(records / stage)})
        results[stage] = {"rc": rc, "stdout": out, "stderr": err, "before": before, "after": snapshot(repo, outs),
                          "seconds": time.perf_counter() - t0, "imports": recorded_imports(repo, records / stage),
                          "foreign": foreign_modules(repo, records / stage),
                          "opened": opened_files(repo, records / stage),
                          "params": sorted(recorded(records / stage, "params"))}
    TIMINGS["rerun_repo: every stage script once"] = time.perf_counter() - t_all
    return repo, results


@pytest.fixture(scope="session")
def helpers():
    """This module, for test modules in sub-folders."""
    return _THIS


def _skip_to_failure(report) -> None:
    """Under CI, turn a skipped report, or an expected failure (xfail, which pytest counts as a pass of sorts),
    into a failure that keeps the reason: CI proves every promise, none may be excused."""
    if not (in_ci() and (report.skipped or hasattr(report, "wasxfail"))):
        return
    if hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"xfail under CI, where every test must pass: {report.wasxfail}"
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, where no test may skip: {str(reason).removeprefix('Skipped: ')}"


# The backstop behind `need`: any skip at all (pytest.skip, a skip/skipif mark, importorskip, a module-level skip)
# fails the run under CI, so a CI machine that lacks something cannot pass by running fewer tests.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _skip_to_failure(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _skip_to_failure(report)
    return report


def pytest_sessionfinish(session) -> None:
    # An xdist worker hands its timings to the controller, which prints them (pytest_testnodedown below).
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["timings"] = dict(TIMINGS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    for name, seconds in getattr(node, "workeroutput", {}).get("timings", {}).items():
        key = name if name not in TIMINGS else f"{name} ({node.gateway.id})"
        TIMINGS[key] = seconds


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.section("pipeline test timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f} s")


_THIS = sys.modules[__name__]
