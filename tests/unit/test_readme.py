"""README.md and docs/ cannot drift from their sources: the pipeline graph is what `dvc dag --md` prints, the committed
study (report/) is what the report stage makes of the committed metrics and figures, every test the pages name
exists, and no measured number is typed into them by hand (generated blocks and code aside)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]
# Blocks written by scripts (the graph, the benchmark table, a seed-grid table): checked against their sources by
# test_readme_dag_block_is_the_live_dvc_dag, tests/test_bench.py and tests/pipeline/test_seed_grid_queue.py.
GENERATED = re.compile(r"<!-- (\w[\w-]*):start -->.*?<!-- \1:end -->", re.S)
# A measured-looking number: a decimal, or a number with a unit of accuracy, time, speed, size or signal.
MEASURED = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?(?:%|x\b|s\b|min\b|h\b|dB\b|points\b|MiB\b|GiB\b|ms\b)"
                      r"|(?<![\w.\-/])\d+\.\d+(?![\w.])")


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def readme_dag():
    return load("readme_dag")


def test_readme_dag_block_is_the_live_dvc_dag(readme_dag):
    """README's Mermaid block is what `dvc dag --md` prints for dvc.yaml today, plus one line per stage."""
    live = readme_dag.dvc_dag_md(REPO_ROOT)
    assert live.startswith("```mermaid") and "flowchart" in live, live[:200]
    assert readme_dag.readme_block(README.read_text()) == readme_dag.generated(REPO_ROOT), (
        "README.md's pipeline block differs from `dvc dag --md`; run python scripts/readme_dag.py")
    assert readme_dag.main(["--check"]) == 0


def test_readme_dag_check_fails_when_the_graph_changes(readme_dag, monkeypatch, capsys):
    live = readme_dag.dvc_dag_md(REPO_ROOT)
    monkeypatch.setattr(readme_dag, "dvc_dag_md", lambda root=None: live.replace("\tnode4-->node2\n", "", 1))
    assert readme_dag.main(["--check"]) == 1
    assert "readme_dag.py" in capsys.readouterr().err
    # A stage without a line of description cannot be added silently.
    with pytest.raises(SystemExit, match="no description"):
        readme_dag.block('flowchart TD\n\tnode1["new_stage"]', ["new_stage"])


def _report_inputs(dest: Path) -> None:
    for rel in ("metrics", "plots", "stages", "params.yaml", "benchmarks"):
        src = REPO_ROOT / rel
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / rel)


def test_committed_report_is_the_committed_run(tmp_path):
    """report/README.md and report/index.html are what stages/report.py writes from the committed metrics/ and
    plots/ (so a new full run, or an edit of the templates, needs the study regenerated and committed)."""
    _report_inputs(tmp_path)
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO_ROOT / "src")}
    proc = subprocess.run([sys.executable, "stages/report.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("README.md", "index.html"):
        assert (tmp_path / "report" / name).read_text() == (REPO_ROOT / "report" / name).read_text(), (
            f"report/{name} is stale: run `python stages/report.py` (or `dvc repro report`) and commit it")


def test_named_tests_exist():
    """Every `tests/...py` or `tests/...py::name` that README.md or a docs page names is there."""
    named = [(page, rel, name) for page in PAGES
             for rel, name in re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", page.read_text())]
    assert len(named) >= 20, named
    missing = []
    for page, rel, name in named:
        path = REPO_ROOT / rel
        if not path.is_file():
            missing.append(f"{page.name}: {rel}")
        elif name and not re.search(rf"^def {name}\(", path.read_text(), re.M):
            missing.append(f"{page.name}: {rel}::{name}")
    assert not missing, f"pages name tests that do not exist: {missing}"


def prose(text: str) -> str:
    """`text` without generated blocks, fenced code, inline code and link targets."""
    text = GENERATED.sub("", text)
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def test_no_measured_number_is_typed_by_hand():
    """Findings live in the generated study and in generated blocks: README and docs/ state no measured number
    (a decimal, or a number with a unit such as %, s, x or dB) in their own prose."""
    found = []
    for page in PAGES:
        text = prose(page.read_text())
        found += [f"{page.relative_to(REPO_ROOT)}: {m.group(0)!r} in …{text[max(0, m.start() - 50):m.end() + 20]!r}"
                  for m in MEASURED.finditer(text)]
    assert not found, "hand-typed numbers (generate them from committed JSON or leave them out):\n" + "\n".join(found)


def test_the_number_check_sees_what_it_forbids():
    for typed in ("99.36 % committed", "3.3x under load", "took 37 min", "22.73 dB", "0.06 points", "1.5-1.8x"):
        assert MEASURED.search(prose(typed)), typed
    for fine in ("exit status 2", "`-j 2`", "<!-- bench:start -->\n99.1 %\n<!-- bench:end -->", "8-bit images",
                 "```\nrun 1.5 s\n```"):
        assert not MEASURED.search(prose(fine)), fine


def test_readme_is_a_map():
    text = README.read_text()
    assert len(text.splitlines()) <= 210, "README.md should stay a map (about 200 lines); move write-ups to docs/"
    for needed in (".venv/bin/python -m pytest", "dvc repro", "dvc exp run -S dropout=0", "dvc metrics diff",
                   "dvc plots show", "dvc queue start", "dvc push", "report/README.md", "report/index.html"):
        assert needed in text, needed
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in text, f"README does not link docs/{page.name}"
