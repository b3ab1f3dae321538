"""Every stage depends on every project file it runs, read from the code itself rather than from a list.

Two sources, both real imports: the stage script's module-level imports (each script run with a `__name__` other
than `__main__` in a fresh subprocess, so main() does not run), and the files that each stage's Python processes
really loaded while `rerun_repo` ran the scripts on the tiny repository (lazy imports inside the functions a stage
calls included; see IMPORT_RECORDER in tests/conftest.py). A project file is anything under stages/ or
src/mnistpipe/; dvc.yaml's deps must list each one that a stage loaded, so that editing it reruns the stage.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs each stage script's module level in one interpreter: project modules are dropped from sys.modules before
# each script, so every script loads its own imports afresh (third-party ones stay loaded, which is only faster).
STATIC = textwrap.dedent("""
    import json, os, runpy, sys
    root, scripts = os.path.realpath(sys.argv[1]), json.loads(sys.argv[2])
    code = tuple(os.path.join(root, d) + os.sep for d in ("stages", os.path.join("src", "mnistpipe")))
    sys.path[:0] = [os.path.join(root, "stages"), os.path.join(root, "src")]
    out = {}
    for stage, script in scripts.items():
        for name, module in list(sys.modules.items()):
            if os.path.realpath(getattr(module, "__file__", None) or "").startswith(code):
                del sys.modules[name]
        runpy.run_path(os.path.join(root, script), run_name="__deps__")
        files = {os.path.realpath(getattr(m, "__file__", None) or "") for m in list(sys.modules.values())}
        out[stage] = sorted(f for f in files if f.startswith(code)) + [os.path.join(root, script)]
    print(json.dumps(out))
""")


def _script(stage: str, spec: dict) -> str:
    found = re.search(r"\bstages/\w+\.py\b", spec.get("cmd", ""))
    assert found, f"dvc.yaml stage {stage}: cannot tell its script from cmd {spec.get('cmd')!r}"
    return found.group(0)


def _deps(spec: dict) -> set[str]:
    return {d for d in spec.get("deps") or [] if isinstance(d, str)}


def _missing(loaded: dict[str, list[str]], stages: dict) -> list[str]:
    return [f"stage {stage}: dvc.yaml deps lack {f}" for stage, files in loaded.items()
            for f in sorted(set(files) - _deps(stages[stage]))]


@pytest.fixture(scope="module")
def static_imports(helpers, tmp_path_factory) -> dict[str, list[str]]:
    """{stage: project files loaded by running its script's module level}, from the working tree."""
    scripts = {stage: _script(stage, spec) for stage, spec in helpers.dvc_stages(REPO_ROOT).items()}
    # An empty working directory: were a script to run main() anyway, its relative paths would lead nowhere.
    cwd = tmp_path_factory.mktemp("static_imports")
    env = {**helpers.stage_env(), "PYTHONPATH": str(REPO_ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", STATIC, str(REPO_ROOT), json.dumps(scripts)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"importing the stage scripts failed:\n{done.stderr[-4000:]}"
    return {stage: sorted(helpers.project_code(REPO_ROOT, files))
            for stage, files in json.loads(done.stdout.strip().splitlines()[-1]).items()}


@pytest.fixture(scope="module")
def used(static_imports, rerun_repo) -> dict[str, set[str]]:
    """{stage: project files it imports at module level or loaded while it ran}."""
    repo, results = rerun_repo
    failed = {s: r["rc"] for s, r in results.items() if s in static_imports and r["rc"] != 0}
    assert not failed, f"stage scripts failed in rerun_repo, so their imports are incomplete: {failed}"
    return {stage: set(files) | set(results[stage]["imports"]) for stage, files in static_imports.items()}


def test_deps_list_module_level_imports(static_imports, helpers):
    """Needs no data: each script's own imports, stages/common.py and the library modules they pull in."""
    for stage, files in static_imports.items():
        assert "src/mnistpipe/__init__.py" in files, f"{stage} loaded no mnistpipe module: {files}"
    missing = _missing(static_imports, helpers.dvc_stages(REPO_ROOT))
    assert not missing, "\n".join(missing)


def test_deps_list_every_file_a_stage_ran(used, rerun_repo, helpers):
    """Lazy imports too: the files each stage's processes really loaded on the tiny repository."""
    repo, results = rerun_repo
    for stage in used:
        assert results[stage]["imports"], f"no imports were recorded for {stage}: is the recorder hook loaded?"
    missing = _missing({s: sorted(f) for s, f in used.items()}, helpers.dvc_stages(REPO_ROOT))
    assert not missing, "\n".join(missing)


def test_editing_a_module_changes_exactly_the_stages_that_load_it(used, repo_copy, helpers):
    """In the reproduced tiny repository, a comment appended to a library module (then to stages/common.py)
    makes `dvc status` report exactly the stages that load that file, and no other."""
    for rel in ("src/mnistpipe/noise.py", "stages/common.py"):
        expected = {stage for stage, files in used.items() if rel in files}
        assert expected, f"no stage loads {rel}; pick a module that some stage uses"
        path = repo_copy / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit that changes no behaviour\n")
        proc = helpers.dvc(repo_copy, "status", "--json", check=True)
        path.write_bytes(original)
        changed = set(json.loads(proc.stdout or "{}"))
        assert changed == expected, (f"after editing {rel}, dvc status lists {sorted(changed)}; the stages that load "
                                     f"it are {sorted(expected)} (missing {sorted(expected - changed)}, extra "
                                     f"{sorted(changed - expected)})")


def test_the_stages_ran_the_copy_not_an_installed_mnistpipe(rerun_repo):
    """The recorded imports above mean something only if they came from the copied repository: an installed (or
    editable) mnistpipe that shadowed the copy's src/ would make every check here read the wrong files."""
    _, results = rerun_repo
    foreign = {stage: r["foreign"] for stage, r in results.items() if r["foreign"]}
    assert not foreign, f"mnistpipe modules loaded from outside the copy: {foreign}"


def _covers(entry: str, key: str) -> bool:
    """A params entry (`recipe`, `download.val_size`) covers that key and every key below it."""
    return key == entry or key.startswith(entry + ".")


def _under(dep: str, path: str) -> bool:
    """A dep (file or folder) covers that path and every path below it."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def test_params_list_every_key_a_stage_reads(rerun_repo, helpers):
    """Each params key a stage's processes read once params.yaml was loaded (recorded per field; reading a whole
    section counts as the section) is in that stage's `params:`, so changing it reruns the stage."""
    _, results = rerun_repo
    stages = helpers.dvc_stages(REPO_ROOT)
    missing = []
    for stage, r in results.items():
        listed = [p for p in stages[stage].get("params") or [] if isinstance(p, str)]
        assert r["params"] or stage == "validate_params", f"no params reads were recorded for {stage}"
        missing += [f"stage {stage}: reads {key} but its params lack it" for key in r["params"]
                    if not any(_covers(entry, key) for entry in listed)]
    assert not missing, "\n".join(missing)


def test_data_deps_are_the_files_a_stage_opens(rerun_repo, helpers):
    """Every data file a stage opened is among its deps (or its own outputs), and every data dep was opened: a dep
    nobody reads reruns the stage for nothing, a file read but not listed leaves a stale result marked current."""
    _, results = rerun_repo
    stages = helpers.dvc_stages(REPO_ROOT)
    problems = []
    for stage, r in results.items():
        deps = [d for d in _deps(stages[stage]) if not d.startswith(("stages/", "src/"))]
        outs = helpers.stage_outputs(REPO_ROOT, stage)
        problems += [f"stage {stage}: opens {f}, which its deps lack" for f in r["opened"]
                     if not any(_under(d, f) for d in (*deps, *outs))]
        problems += [f"stage {stage}: lists dep {d}, which it never opened" for d in deps
                     if not any(_under(d, f) for f in r["opened"])]
    assert not problems, "\n".join(problems)
