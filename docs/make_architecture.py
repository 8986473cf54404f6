"""Draw docs/images/imports.svg: the real import graph between chainrule's modules, one box
per layer (ops at the bottom, compiler in the middle, runtime on top), an arrow per
importing pair of modules. An import that goes up a layer, or closes a cycle, is red.

The graph is read from the source with `ast` (tests/import_graph.py, the walker the layering
tests use), so nothing is imported. The test suite fails while docs/images/imports.dot is
not what this script draws today.

    python docs/make_architecture.py
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tests.import_graph import LAYERS, cycles, import_graph, upward  # noqa: E402

IMAGES = os.path.join(HERE, "images")
NAME = "imports"

TITLE = ("chainrule's imports: an arrow goes from the importing module down to the imported one; "
         "dashed: only inside a function; red: goes up a layer or closes a cycle")
LAYER_LABELS = {
    "runtime": "runtime/   executors, and the apps on top: training, command line, benchmarks, tutorial kit",
    "compiler": "compiler/   passes: graph -> graph or plan; imports neither torch nor triton",
    "ops": "ops/   the IR, tracing, primitives and the DSL",
}
LAYER_COLOURS = {"runtime": "#fdf0e0", "compiler": "#e6f4e6", "ops": "#e4eef9"}
RED = "#d62728"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cluster_id(package: str) -> str:
    return "cluster_" + package.replace(".", "_")


def _packages(modules) -> list[str]:
    """Every folder that holds modules, the layers' top folders included: each is a box."""
    found = set()
    for module in modules:
        parts = module.split(".")
        for i in range(1, len(parts)):
            found.add(".".join(parts[:i]))
    found.update(m for m in modules if "." not in m)
    return sorted(found)


def _package_of(module: str, packages) -> str:
    """The folder a module is drawn in: a package's __init__ sits in the package's own box."""
    return module if module in packages else module.rpartition(".")[0]


def _label(module: str, packages) -> str:
    return "__init__" if module in packages else module.rpartition(".")[2]


def _cluster(package: str, graph, packages, depth: int) -> list[str]:
    """One box per folder, its modules inside and its subfolders as nested boxes."""
    pad = "  " * depth
    top = "." not in package
    label = LAYER_LABELS[package] if top else package.rpartition(".")[2] + "/"
    style = "filled" if top else "rounded,filled"
    fill = LAYER_COLOURS[package] if top else "#ffffff80"
    lines = [f"{pad}subgraph {_cluster_id(package)} {{",
             f"{pad}  label={_quote(label)}; labeljust=l; fontsize={12 if top else 10};",
             f"{pad}  style={_quote(style)}; fillcolor={_quote(fill)}; color=\"#999999\";"]
    for module in sorted(m for m in graph if _package_of(m, packages) == package):
        lines.append(f"{pad}  {_quote(module)} [label={_quote(_label(module, packages))}];")
    for sub in sorted(p for p in packages if p.rpartition(".")[0] == package):
        lines.extend(_cluster(sub, graph, packages, depth + 1))
    lines.append(f"{pad}}}")
    return lines


def _edge(importer: str, target: str, imports, in_cycle: bool) -> str:
    """An arrow importer -> target: dashed when every import behind it is inside a function,
    red when it goes up a layer or closes a cycle (and then it does not pull the layout)."""
    attrs = []
    if all(imp.in_function for imp in imports):
        attrs.append("style=dashed")
    if upward(importer, target) or in_cycle:
        attrs.append(f'color="{RED}"; penwidth=1.6; arrowsize=0.6')
        if upward(importer, target):
            attrs.append("constraint=false")
    return f"  {_quote(importer)} -> {_quote(target)}" + (f" [{'; '.join(attrs)}]" if attrs else "") + ";"


def dot_source(graph) -> str:
    """The picture as DOT text, a function of the graph alone (nodes and edges sorted, no line
    numbers), so the same imports always give the same text."""
    packages = _packages(graph)
    in_cycle = {m: i for i, part in enumerate(cycles(graph)) for m in part}
    lines = ["digraph imports {",
             f"  graph [label={_quote(TITLE)}; labelloc=t; fontname=Helvetica; fontsize=13; "
             "rankdir=TB; newrank=true; ranksep=0.45; nodesep=0.12; compound=true];",
             '  node [shape=box; style="rounded,filled"; fillcolor=white; fontname=Helvetica; fontsize=10; '
             'height=0.25; margin="0.08,0.03"];',
             '  edge [color="#00000055"; arrowsize=0.45; penwidth=0.7];']
    for layer in reversed(LAYERS):                      # runtime first: it is drawn on top
        if layer in packages:
            lines.extend(_cluster(layer, graph, packages, 1))
    for importer, target in sorted(graph.edges):
        cyclic = importer in in_cycle and in_cycle.get(importer) == in_cycle.get(target)
        lines.append(_edge(importer, target, graph.edges[importer, target]["imports"], cyclic))
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg_titles(graph) -> set[str]:
    """What graphviz writes as <title> in the SVG for this graph: the graph's name, each box,
    each module and each arrow; the test compares these with the committed SVG."""
    packages = _packages(graph)
    return ({"imports"} | {_cluster_id(p) for p in packages} | set(graph.nodes)
            | {f"{a}->{b}" for a, b in graph.edges})


def write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> None:
    graph = import_graph()
    text = dot_source(graph)
    os.makedirs(IMAGES, exist_ok=True)
    dot_path = os.path.join(IMAGES, f"{NAME}.dot")
    write(dot_path, text)
    upward_edges = [(a, b) for a, b in graph.edges if upward(a, b)]
    print(f"{graph.number_of_nodes()} modules, {graph.number_of_edges()} importing pairs, "
          f"{len(upward_edges)} going up a layer, {len(cycles(graph))} cycles")
    if shutil.which("dot") is None:
        print(f"graphviz's `dot` program is not installed, so only {dot_path} was written. Install it "
              f"(Debian/Ubuntu: apt-get install graphviz) and run this again to draw {NAME}.svg.")
        return
    svg = subprocess.run(["dot", "-Tsvg"], input=text.encode(), capture_output=True, check=True).stdout
    svg_path = os.path.join(IMAGES, f"{NAME}.svg")
    with open(svg_path + ".tmp", "wb") as f:
        f.write(svg)
    os.replace(svg_path + ".tmp", svg_path)
    print(f"wrote {dot_path} and {svg_path}")


if __name__ == "__main__":
    main()
