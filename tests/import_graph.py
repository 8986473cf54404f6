"""The import graph of ops/, compiler/ and runtime/, read from the source with `ast`.

Nothing is imported or run: the files are parsed, so the walk works on a tree that does not
import today (a restructure in progress) and costs no torch or triton start-up. Used by
tests/test_imports.py (the layering rules) and docs/make_architecture.py (the picture).

A node of the graph is a module: `ops.ir` is ops/ir.py, `compiler.codegen` is
compiler/codegen/__init__.py. An edge says that a file names that module in an import
statement, at module level or inside a function.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass

import networkx as nx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The layers, lowest first: a module may import from its own layer and the ones below it.
LAYERS = ("ops", "compiler", "runtime")

# Linter and type-checker pragmas: a comment made only of these is not a reason.
_PRAGMA = re.compile(r"\bnoqa(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?"
                     r"|\btype:\s*ignore(?:\[[^\]]*\])?"
                     r"|\b(?:pylint|pragma|fmt|isort):\s*\S+", re.IGNORECASE)


@dataclass(frozen=True)
class Import:
    """One module named by one import statement (`import a, b` gives two)."""
    path: str            # the importing file, relative to the repository root
    line: int            # where the statement starts
    importer: str        # the importing module's dotted name
    statement: str       # the statement, on one line (ast.unparse: `as` names and dots kept)
    target: str          # the module it loads: a project module, or an outside name (`torch`, `numpy.linalg`)
    in_function: bool    # inside a def: runs when the function is called, not when the module loads
    type_checking: bool  # under `if TYPE_CHECKING:`: never runs
    reason: str | None   # the comment on the line or on the line just above, pragmas removed

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def describe(self) -> str:
        """file:line and the statement, the way a failure message names an import."""
        return f"{self.where}: `{self.statement}`"


def module_name(path: str) -> str:
    """The dotted name a repository-relative .py path is imported as: other files refer to a
    module by this name, so it is the graph's node."""
    parts = path[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    """The layer of a project module (0 ops, 1 compiler, 2 runtime); None outside the project."""
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def project_files(root: str = ROOT) -> dict[str, str]:
    """{module name: repository-relative path} of every .py file under the three packages,
    walked in sorted order so that everything built from it is deterministic."""
    found = {}
    for package in LAYERS:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            for name in sorted(files):
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                    found[module_name(rel)] = rel
    return found


def absolute_base(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute dotted name `from <dots><module> import ...` refers to. Level 1 is the
    importer's own package (a package's __init__ is its own package), each further dot one
    package up — the same rule as importlib.util.resolve_name."""
    if level == 0:
        return module or ""
    package = importer if is_package else importer.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ValueError(f"{importer}: a relative import goes above the top-level package")
    base = ".".join(parts[:len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def targets_of(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules) -> list[str]:
    """The modules one statement loads. `import a.b` loads a.b. `from p import x` loads the
    submodule p.x when there is one (that is what runs), else p itself, whose namespace
    holds x. Package __init__s run along the way are not edges: every import of a.b would
    otherwise also point at a, and every submodule at its own package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = absolute_base(importer, is_package, node.level, node.module)
    if base == "__future__":
        return []
    found = []
    for alias in node.names:
        name = f"{base}.{alias.name}"
        target = name if name in modules else base
        if target not in found:
            found.append(target)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:` — a block that never runs."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_statements(tree: ast.Module):
    """Yield (statement, in_function, type_checking) for every import in a module. A class
    body runs at import time, so only a def makes an import function-level. Expressions
    cannot hold statements (a lambda's body is an expression), so they are not entered."""
    def visit(nodes, in_function, type_checking):
        for node in nodes:
            if isinstance(node, ast.expr):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, in_function, type_checking
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from visit(node.body, True, type_checking)
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.body, in_function, True)
                yield from visit(node.orelse, in_function, type_checking)
            else:
                yield from visit(ast.iter_child_nodes(node), in_function, type_checking)
    yield from visit(tree.body, False, False)


def reason_for(node: ast.stmt, lines: list[str]) -> str | None:
    """The comment that explains an import: one on any line of the statement, or a
    comment-only line just above it. An import statement holds no string, so a '#' on its
    lines starts a comment. Linter pragmas (`# noqa`) say nothing about why, so they are
    removed; what is left must be words."""
    candidates = [lines[row - 1].partition("#")[2] for row in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                  if "#" in lines[row - 1]]
    above = lines[node.lineno - 2].strip() if node.lineno >= 2 else ""
    if above.startswith("#"):
        candidates.append(above.lstrip("#"))
    for text in candidates:
        text = _PRAGMA.sub("", text).strip(" \t:;,()-")
        if re.search(r"[A-Za-z]{2,}", text):
            return text
    return None


def imports_of_file(path: str, modules, root: str = ROOT) -> list[Import]:
    """Every module one file's import statements name, with where and how each is imported."""
    with open(os.path.join(root, path), encoding="utf-8") as f:
        source = f.read()
    tree = ast.parse(source, filename=path)
    lines = source.splitlines()
    importer = module_name(path)
    is_package = path.endswith("/__init__.py")
    found = []
    for node, in_function, type_checking in import_statements(tree):
        statement = ast.unparse(node)
        reason = reason_for(node, lines)
        for target in targets_of(node, importer, is_package, modules):
            found.append(Import(path, node.lineno, importer, statement, target, in_function, type_checking, reason))
    return found


def all_imports(root: str = ROOT) -> list[Import]:
    """The import statements of every file under ops/, compiler/ and runtime/, in file order."""
    modules = project_files(root)
    found = []
    for path in modules.values():
        found.extend(imports_of_file(path, modules, root))
    return found


def project_target(target: str, modules) -> str | None:
    """The project module an import loads, or None for an outside one (numpy, torch). A name
    that is not a file (`import ops.nothing`) falls back to its nearest existing package."""
    if layer_of(target) is None:
        return None
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(root: str = ROOT, imports: list[Import] | None = None) -> nx.DiGraph:
    """Modules as nodes (every file, imported or not), an edge importer -> imported for each
    pair, carrying the list of `Import`s behind it under 'imports'. Pass `imports` when
    all_imports(root) was already read, to read the files once."""
    modules = project_files(root)
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for imp in all_imports(root) if imports is None else imports:
        target = project_target(imp.target, modules)
        if target is None or target == imp.importer:
            continue
        if not graph.has_edge(imp.importer, target):
            graph.add_edge(imp.importer, target, imports=[])
        graph.edges[imp.importer, target]["imports"].append(imp)
    return graph


def upward(importer: str, target: str) -> bool:
    """An import from a lower layer to a higher one: ops -> compiler, ops -> runtime,
    compiler -> runtime."""
    return layer_of(importer) < layer_of(target)


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """The sets of modules that import each other, directly or around a loop: strongly
    connected components of more than one module, each sorted, largest first."""
    parts = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    return sorted(parts, key=lambda c: (-len(c), c))
