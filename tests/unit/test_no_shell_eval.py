"""No `shell=True`, no `eval(`, no `exec(` (nor os.system / os.popen) anywhere in src/ or stages/.

Read from the syntax tree of every file, so `model.eval()` (a torch method) is not a hit, while a call of the
built-in `eval` or `exec`, or any call passing `shell=True`, is, however it is spaced or wrapped.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("src", "stages")
BUILTINS = {"eval", "exec"}
OS_SHELL = {"system", "popen"}


def offences(source: str, name: str = "<source>") -> list[str]:
    """`file:line: what` of every forbidden call in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in BUILTINS:
            found.append(f"{name}:{node.lineno}: {func.id}(")
        if (isinstance(func, ast.Attribute) and func.attr in OS_SHELL and isinstance(func.value, ast.Name)
                and func.value.id == "os"):
            found.append(f"{name}:{node.lineno}: os.{func.attr}(")
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                found.append(f"{name}:{node.lineno}: shell={ast.unparse(kw.value)}")
    return found


def python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO_ROOT / folder).rglob("*.py"))


def test_no_shell_true_eval_or_exec_in_src_and_stages():
    files = python_files()
    assert len(files) > 20, files  # the scan sees the project
    bad = [hit for f in files for hit in offences(f.read_text(encoding="utf-8"), str(f.relative_to(REPO_ROOT)))]
    assert not bad, "forbidden calls:\n" + "\n".join(bad)


def test_the_scan_finds_what_it_forbids():
    source = ("import os, subprocess\nsubprocess.run('ls', shell=True)\nx = eval('1')\nexec('y = 2')\n"
              "os.system('ls')\nmodel.eval()\nsubprocess.run(['ls'], shell=False)\n")
    assert [hit.split(": ", 1)[1] for hit in offences(source)] == ["shell=True", "eval(", "exec(", "os.system("]
