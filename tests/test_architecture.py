"""The package's shape: layered imports without cycles, small functions, one place for shared constants.

Every ``import`` counts, also the deferred ones inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "hestdata"

# Lower layers never import higher ones; packages on one layer never import each other.
LAYERS: dict[str, int] = {
    "_version": 0, "errors": 0, "io": 0,
    "units": 1, "raster": 1, "ids": 1,
    "metadata": 2, "model": 2, "options": 2,
    "curation": 3,
    "store": 4,
    "sources": 5,
    "convert": 6, "loader": 6,
    "remote": 7, "plot": 7, "distributed": 0,
    "cohort": 8, "bench": 8,
    "demo": 9,
    "cli": 10,
    "<root>": 11,
}
# The layers named by the design: these import nothing from loader, remote, bench or cohort code.
FORBIDDEN = {"store": {"loader", "remote", "bench", "cohort", "convert", "sources"},
             "curation": {"loader", "remote", "bench", "cohort", "convert", "sources", "store"},
             "sources": {"loader", "remote", "bench", "cohort", "convert", "store"},
             "io": set(LAYERS) - {"io"}}
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name or '')} for every hestdata import in it."""
    edges: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("hestdata"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    edges[name].add((sub, "") if sub in mods else (node.module, a.name))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("hestdata"):
                        edges[name].add((a.name, ""))
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{path}: relative import; use absolute hestdata imports")
    return edges


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_every_package_has_a_layer() -> None:
    pkgs = {_package(m) for m in _modules()}
    assert pkgs <= set(LAYERS), f"packages without a layer: {sorted(pkgs - set(LAYERS))}"


def test_imports_only_go_down() -> None:
    mods = _modules()
    bad = []
    for src, targets in _imports(mods).items():
        a = _package(src)
        for tgt, _ in targets:
            b = _package(tgt)
            if a == b:
                continue
            if LAYERS[b] >= LAYERS[a] or b in FORBIDDEN.get(a, set()):
                bad.append(f"{src} -> {tgt} ({a}@{LAYERS[a]} imports {b}@{LAYERS[b]})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycles_between_modules() -> None:
    mods = _modules()
    graph = {m: {t for t, _ in ts if t in mods and t != m} for m, ts in _imports(mods).items()}
    # a package's __init__ re-exporting its own modules is not a cycle
    inits = {m for m, p in mods.items() if p.name == "__init__.py"}
    graph = {m: {t for t in ts if not (m in inits and t.startswith(m + "."))} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_packages() -> None:
    mods = _modules()
    bad = [f"{src} imports {tgt}.{name}" for src, ts in _imports(mods).items() for tgt, name in ts
           if name.startswith("_") and name != "__version__" and _package(src) != _package(tgt)]
    assert not bad, "\n".join(sorted(bad))


def test_functions_are_small() -> None:
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_default_patch_geometry_is_spelled_once() -> None:
    """One constant (``units.DEFAULT_PATCH``) says what the default patch geometry is."""
    hits = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == "224px_0.5um":
                hits.append(f"{name}:{node.lineno}")
    assert not hits, "default geometry spelled out instead of DEFAULT_PATCH: " + ", ".join(hits)


def test_catalog_parsed_in_one_place() -> None:
    pattern = re.compile(r"read_parquet\(")
    users = sorted(n for n, p in _modules().items()
                   if pattern.search(p.read_text()) and "CATALOG" in p.read_text())
    assert users == ["hestdata.store.catalog"], users


def test_one_level_chooser() -> None:
    """Pyramid-level choice lives in one module (``curation.levels``): its tolerance is spelled nowhere else."""
    users = sorted(n for n, p in _modules().items() if "1.0001" in p.read_text())
    assert users == ["hestdata.curation.levels"], users
