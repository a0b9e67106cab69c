"""The import contract of docs/architecture.md ("Import layers"): layers only import downward, no cycles,
``sim`` imports no learning code, nothing imports ``stages`` but the command line, no module loads code
by file path, and imports do no work."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "slate_rl"

# Lower number = lower layer. A module may import its own layer or lower ones.
LAYERS = {
    "core": 0, "sim": 1, "data": 2, "models": 3, "online": 4, "offline": 5, "report": 6, "bench": 6,
    "pipeline": 7, "stages": 7, "cli": 8, "__main__": 8,
}
LEARNING = ("lightning", "swanlab", "torch.optim", "slate_rl.data", "slate_rl.models", "slate_rl.online",
            "slate_rl.offline", "slate_rl.report", "slate_rl.stages")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "slate_rl" or len(parts) < 2:
        return None
    # ``from slate_rl import __version__``: the root package, importable from everywhere.
    return LAYERS.get(parts[1], 0)


def test_every_subpackage_has_a_layer():
    for module in _modules():
        parts = module.split(".")
        if len(parts) > 1:
            assert parts[1] in LAYERS, f"{module} belongs to no layer; add it to LAYERS and docs/architecture.md"


def test_imports_only_go_downward():
    modules = _modules()
    for module, path in modules.items():
        own = _layer(module)
        if own is None:
            continue
        for imported in _imports(path):
            other = _layer(imported)
            if other is not None:
                assert other <= own, f"{module} (layer {own}) imports {imported} (layer {other})"


def test_nothing_imports_stages_except_the_command_line():
    for module, path in _modules().items():
        if module.startswith("slate_rl.stages") or module in ("slate_rl.cli", "slate_rl.__main__"):
            continue
        bad = [i for i in _imports(path) if i.startswith("slate_rl.stages")]
        assert not bad, f"{module} imports {bad}"


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_sim_imports_no_learning_code():
    for module, path in _modules().items():
        if module.startswith("slate_rl.sim"):
            bad = [i for i in _imports(path) if i.startswith((*LEARNING, "slate_rl.core.logger"))]
            assert not bad, f"{module} imports learning code {bad}"
        if module.startswith("slate_rl.core"):  # the logger wrapper imports SwanLab lazily, inside functions
            bad = [i for i in _top_level_imports(path) if i.startswith(LEARNING)]
            assert not bad, f"{module} imports learning code at module level {bad}"


PATH_LOADERS = {"spec_from_file_location", "module_from_spec", "SourceFileLoader", "SourcelessFileLoader",
                "exec_module", "run_path", "run_module", "exec", "execfile"}
"""Names of the ways to run code from a file path (``importlib.util``, ``importlib.machinery``, ``runpy``,
``exec``). Code loaded so is an import the graph below cannot see (its cycles and layers go unchecked)."""


def _path_loads(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"import {m}" for m in modules if m.split(".")[0] == "runpy"]
            found += [f"import {a.name}" for a in node.names if a.name in PATH_LOADERS]
        elif isinstance(node, ast.Attribute) and node.attr in PATH_LOADERS:
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Name) and node.id in PATH_LOADERS:
            found.append(node.id)
    return found


def test_the_path_load_check_sees_the_usual_loaders():
    source = ("import importlib.util, runpy\n"
              "spec = importlib.util.spec_from_file_location('m', 'bench/x.py')\n"
              "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
              "runpy.run_path('bench/x.py')\n"
              "from importlib.machinery import SourceFileLoader\n"
              "exec(open('bench/x.py').read())\n")
    assert sorted(_path_loads(source)) == sorted([
        "import runpy", "importlib.util.spec_from_file_location", "spec.loader.exec_module",
        "importlib.util.module_from_spec", "runpy.run_path", "import SourceFileLoader", "exec"])


def test_no_module_loads_code_by_path():
    bad = [f"{m}: {f}" for m, p in _modules().items() for f in _path_loads(p.read_text())]
    assert not bad, f"modules that load code by file path (import it as a module of the package instead): {bad}"


def _import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    modules = _modules()
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_no_import_cycles():
    graph = _import_graph()
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n] if n in stack else [m, n]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if state.get(n) is None:
                visit(n, [*stack, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def _module_level_work(path: Path) -> list[str]:
    """Module-level statements other than imports, definitions, constant assignments and
    the Gymnasium registration guard."""
    found = []
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstrings
        if isinstance(node, ast.If):
            src = ast.unparse(node)
            if "__name__ == '__main__'" in src or "gymnasium.register" in src:
                continue
        if path.name == "__main__.py":
            continue
        found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:60]}")
    return found


def test_no_work_at_import_time_statically():
    work = [w for p in _modules().values() for w in _module_level_work(p)]
    assert not work, f"module-level statements that do work: {work}"


def test_importing_everything_writes_nothing_and_loads_no_learning_code(tmp_path):
    names = [m for m in _modules() if not m.endswith("__main__")]
    code = (
        "import sys, importlib\n"
        "import slate_rl.sim, slate_rl.core\n"
        "assert 'lightning' not in sys.modules and 'swanlab' not in sys.modules, 'sim pulled in learning code'\n"
        f"for m in {names!r}: importlib.import_module(m)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=120)
    assert list(tmp_path.iterdir()) == [], "importing slate_rl created files"
