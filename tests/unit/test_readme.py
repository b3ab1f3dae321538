"""The README cannot drift from the committed results: its results table, the HEAD column of its experiment
output and the tests its Guarantees table names are all checked against the repository as it is."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
EXP_START, EXP_END = "<!-- exp:start -->", "<!-- exp:end -->"
REGENERATE = "regenerate it with `python scripts/results_table.py`"
REPASTE = ("after a new full run, rerun `dvc exp run -S dropout=0`, `dvc metrics diff --precision 4` and the "
           "`dvc exp show` line as the README says, paste their output and date it")


def load_script():
    spec = importlib.util.spec_from_file_location("results_table", REPO_ROOT / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results_table():
    return load_script()


def test_results_table_matches_committed_metrics(results_table):
    metrics = results_table.read_metrics(REPO_ROOT)
    missing = sorted(set(results_table.FILES) - set(metrics))
    assert not missing, f"metrics files missing, so the table would be partial: {missing}"
    assert results_table.readme_table(README.read_text()) == results_table.results_markdown(metrics), (
        f"README.md's results table differs from metrics/; {REGENERATE}")


def test_results_table_check_fails_on_a_stale_table(results_table, tmp_path, monkeypatch, capsys):
    """`--check` passes on the repository and fails once one number in a copy of the README has changed."""
    assert results_table.main(["--check"]) == 0
    for rel in results_table.FILES.values():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, tmp_path / rel)
    table = results_table.readme_table(README.read_text())
    first_pct = re.search(r"\d+\.\d\d%", table).group(0)
    stale = README.read_text().replace(table, table.replace(first_pct, "12.34%", 1), 1)
    (tmp_path / "README.md").write_text(stale)
    monkeypatch.setattr(results_table, "ROOT", tmp_path)
    assert results_table.main(["--check"]) == 1
    assert "results_table.py" in capsys.readouterr().err


def _lookup(data, dotted: str):
    node = data
    for key in dotted.split("."):
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def _experiment_block() -> tuple[str, str, str]:
    """(the text before the block, the block, the text after it)."""
    text = README.read_text()
    assert text.count(EXP_START) == 1 and text.count(EXP_END) == 1, f"README needs one {EXP_START} ... {EXP_END}"
    before, rest = text.split(EXP_START)
    block, after = rest.split(EXP_END)
    return before, block, after


def _diff_rows(block: str) -> dict[tuple[str, str], tuple[str, str]]:
    """{(path, metric): (HEAD, workspace)} of the `dvc metrics diff` table in the block."""
    lines = block.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["Path", "Metric", "HEAD", "workspace",
                                                                          "Change"])
    rows = {}
    for line in lines[header + 1:]:
        parts = line.split()
        if len(parts) != 5 or not parts[0].startswith("metrics/"):
            break
        rows[(parts[0], parts[1])] = (parts[2], parts[3])
    return rows


def test_experiment_block_matches_committed_metrics():
    """The pasted `dvc metrics diff` compares against HEAD: its HEAD column must be the committed metrics/."""
    before, block, after = _experiment_block()
    assert re.search(r"\b20\d\d-[01]\d-[0-3]\d\b", before[-800:]), f"the experiment output is not dated; {REPASTE}"
    rows = _diff_rows(block)
    assert ("metrics/evaluate.json", "baseline.accuracy") in rows and (
        "metrics/evaluate.json", "baseline.n_errors") in rows, f"the diff lacks the baseline's test accuracy: {rows}"
    stale = []
    for (path, metric), (head, _) in rows.items():
        committed = _lookup(json.loads((REPO_ROOT / path).read_text()), metric)
        # `--precision 4` rounds to 4 decimals and prints the shortest form (0.998, 67).
        # Booleans print as True/False; numbers are rounded by `--precision 4` to the shortest form (0.998, 67).
        matches = head == str(committed) if isinstance(committed, bool) else (
            head != "-" and float(head) == round(committed, 4))
        if not matches:
            stale.append(f"{path} {metric}: README {head}, committed {committed}")
    assert not stale, "the experiment output's HEAD column is not the committed run:\n" + "\n".join(stale) + (
        f"\n{REPASTE}")

    head_acc, ws_acc = (float(v) for v in rows[("metrics/evaluate.json", "baseline.accuracy")])
    head_err, ws_err = (int(v) for v in rows[("metrics/evaluate.json", "baseline.n_errors")])
    # `dvc exp show`: the committed run (main) and the experiment (workspace) with their dropout.
    shown = {line.split()[0]: line.split()[1:] for line in block.splitlines()
             if line.split()[:1] in (["main"], ["workspace"])}
    committed_dropout = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["dropout"]
    assert float(shown["main"][0]) == head_acc and float(shown["main"][1]) == committed_dropout, shown
    assert float(shown["workspace"][0]) == ws_acc and float(shown["workspace"][1]) == 0, shown
    # ... and the sentence that reads the result.
    said = re.search(r"made\s+(\d+)\s+instead\s+of\s+(\d+)\s+test\s+errors\s+\(([\d.]+)\s+points\)", after)
    assert said, "the sentence 'made N instead of M test errors (D points)' after the experiment output is gone"
    assert (int(said[1]), int(said[2])) == (ws_err, head_err), said[0]
    assert said[3] == f"{abs(ws_acc - head_acc) * 100:.2f}", said[0]


def test_named_tests_exist():
    """Every `tests/...py` or `tests/...py::name` the README names (the Guarantees table) is there."""
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", README.read_text())
    assert len(named) >= 5, named
    missing = []
    for rel, name in named:
        path = REPO_ROOT / rel
        if not path.is_file():
            missing.append(rel)
        elif name and not re.search(rf"^def {name}\(", path.read_text(), re.M):
            missing.append(f"{rel}::{name}")
    assert not missing, f"README.md names tests that do not exist: {missing}"
