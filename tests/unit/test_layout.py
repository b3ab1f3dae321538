"""The folder tree is the architecture: src/mnistpipe/ is the library the stages import, src/mnistpipe/lab/ the tools
that study it, src/mnistpipe/commands/ the user commands. Arrows point down only (lab and commands import the
library, never the reverse), and command-line parsing lives only in lab and command entry points."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "src" / "mnistpipe"
LIBRARY = sorted(PACKAGE.glob("*.py"))  # the library: the modules directly in src/mnistpipe/
UPPER = ("lab", "commands")  # the sub-packages above the library

# Library code that may do what the library otherwise may not, each with why.
ALLOWED = {
    ("runner.py", "run_stage", "sys.argv"): "the stages' and commands' shared entry-point wrapper: `--traceback` and "
                                            "the program name of its `done in` line",
    ("params.py", "validate", "params.yaml"): "the default name of the mapping in error messages; nothing is read",
    ("params.py", "parse", "params.yaml"): "the default name of the text in error messages; the caller reads the file",
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _enclosing_functions(tree: ast.Module) -> dict[int, str]:
    """id of every node -> the name of the outermost function it sits in ("" at module level)."""
    out: dict[int, str] = {}

    def visit(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = func or (child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else "")
            out[id(child)] = name
            visit(child, name)
    visit(tree, "")
    return out


def _imports(tree: ast.Module) -> list[tuple[str, int, list[str]]]:
    """Every import anywhere in the module (module level and inside functions): (module, level, names)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level, [alias.name for alias in node.names]))
    return found


def _library_targets(module: str, level: int, names: list[str]) -> set[str]:
    """The library modules (file stems) that one import in a library module loads; `..` and beyond count as
    "outside the library" and give "..": a library module sits directly in the package."""
    if level >= 2:
        return {".."}
    if level == 1:
        parts = module.split(".") if module else []
    elif module == "mnistpipe" or module.startswith("mnistpipe."):
        parts = module.split(".")[1:]
    else:
        return set()  # not this project
    return {parts[0]} if parts else set(names)


def _violations_of_a() -> list[str]:
    found = []
    for path in LIBRARY:
        tree = _tree(path)
        docs, funcs = _docstrings(tree), _enclosing_functions(tree)
        for node in ast.walk(tree):
            where = (path.name, funcs.get(id(node), ""))
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "argparse" for a in node.names) \
                    or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "argparse":
                found.append(f"{path.name}:{node.lineno} imports argparse")
            elif isinstance(node, ast.Attribute) and node.attr == "argv" and isinstance(node.value, ast.Name) \
                    and node.value.id == "sys" and (*where, "sys.argv") not in ALLOWED:
                found.append(f"{path.name}:{node.lineno} reads sys.argv")
            elif isinstance(node, ast.ImportFrom) and node.module == "sys" \
                    and any(a.name == "argv" for a in node.names):
                found.append(f"{path.name}:{node.lineno} imports sys.argv")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "params.yaml" in node.value \
                    and id(node) not in docs and (*where, "params.yaml") not in ALLOWED:
                found.append(f"{path.name}:{node.lineno} names params.yaml in code")
    return found


def test_library_modules_parse_no_command_line_and_read_no_params_file():
    """(a) argparse and sys.argv belong to the lab and command entry points; params.yaml to the stages and the lab
    entry points, which pass its values down as arguments."""
    assert LIBRARY, f"no library modules found in {PACKAGE}"
    found = _violations_of_a()
    assert not found, "library modules doing an entry point's job:\n" + "\n".join(found)


def test_library_imports_neither_lab_nor_commands():
    """(b) arrows point down only: no library module imports mnistpipe.lab or mnistpipe.commands (absolute, `.lab`,
    `from . import commands`, or anything from `..`)."""
    found = []
    for path in LIBRARY:
        for module, level, names in _imports(_tree(path)):
            targets = _library_targets(module, level, names)
            if targets & {*UPPER, ".."}:
                found.append(f"{path.name}: {'.' * level}{module} {names}")
    assert not found, "library modules importing upwards:\n" + "\n".join(found)


def _import_graph() -> dict[str, set[str]]:
    stems = {p.stem for p in LIBRARY} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for path in LIBRARY:
        if path.stem == "__init__":
            continue
        targets = set()
        for module, level, names in _imports(_tree(path)):
            targets |= _library_targets(module, level, names)
        graph[path.stem] = (targets & stems) - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_helpers_find_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _library_targets("", 1, ["io", "train"]) == {"io", "train"}
    assert _library_targets("mnistpipe.lab.bench", 0, []) == {"lab"}
    assert _library_targets("errors", 2, ["x"]) == {".."} and _library_targets("numpy", 0, []) == set()
    assert "train" in _import_graph()["tune"], "tune imports train (`from .train import train_cnn`)"


def test_the_library_import_graph_has_no_cycle():
    """(c) over module-level and function-level imports, relative and absolute."""
    cycle = _cycle(_import_graph())
    assert cycle is None, "library import cycle: " + " -> ".join(cycle)


def test_no_test_hooks_in_shipped_code():
    """(d) no test-only switch (`..._TEST_...`) in src/ or stages/."""
    files = [p for root in ("src", "stages") for p in sorted((REPO_ROOT / root).rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)]
    found = [f"{p.relative_to(REPO_ROOT)}:{n}" for p in files
             for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if "_TEST_" in line]
    assert not found, "test hooks in shipped code: " + ", ".join(found)
