"""Graphviz pictures of a graph: `graph.render("forward.svg")`.

Inputs are ovals (parameters, the inputs that get gradients, are shaded), primitives are
boxes labelled with their op and output type, backward nodes are orange, and hovering a
node shows the line of the user's code that made it. Without the `dot` program, the .dot
text is written instead, with a note on how to install graphviz.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from .printer import literal

FORWARD, BACKWARD, INPUT, PARAM, CONST = "#dbeafe", "#fed7aa", "#f1f5f9", "#bbf7d0", "#f8fafc"
FORMATS = ("svg", "png", "pdf", "dot")


def _escape(text):
    """A DOT string body: quotes and backslashes escaped, newlines as \\n."""
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_dot(graph, params=()):
    """The DOT text of graph; `params` are input nodes drawn as parameters."""
    from .ir import source_text

    lines = [f'digraph "{_escape(graph.name)}" {{',
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.3];',
             '  node [fontname="Helvetica", fontsize=10, style="filled,rounded", shape=box, penwidth=0.8];',
             '  edge [color="#64748b", arrowsize=0.6];']
    outputs = set(graph.outputs)
    for node in graph.nodes:
        if node.is_scalar_const:
            continue                   # scalars are written into the label of their user
        where = f"{node.source}: {source_text(node.source)}" if node.source else ""
        tooltip = _escape(where or node.op)
        if node.op == "input":
            fill = PARAM if node in params else INPUT
            label = f"{node.name}\n{node.type_str}"
            attrs = f'shape=ellipse, fillcolor="{fill}"'
        elif node.op == "const":
            label = f"const\n{node.type_str}"
            attrs = f'fillcolor="{CONST}"'
        else:
            scalars = [literal(i.attrs["value"], i.dtype) for i in node.inputs if i.is_scalar_const]
            extra = f" ({', '.join(scalars)})" if scalars else ""
            scope = f"\n[{'.'.join(node.scope)}]" if node.scope and node.scope != (node.op,) else ""
            label = f"{node.op}{extra}\n{node.type_str}{scope}"
            fill = BACKWARD if node.role == "backward" else FORWARD
            attrs = f'fillcolor="{fill}"' + (", penwidth=2" if node in outputs else "")
        lines.append(f'  n{node.id} [label="{_escape(label)}", '
                     f'tooltip="{tooltip}", {attrs}];')
    for node in graph.nodes:
        for i in node.inputs:
            if not i.is_scalar_const:
                lines.append(f"  n{i.id} -> n{node.id};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(graph, path, params=()):
    """Write graph to path; the format comes from the suffix (svg, png, pdf or dot).
    Returns the path written (the .dot file when graphviz's `dot` is missing)."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"render: cannot tell the format from {path!r}; use a name ending in "
                         f"{', '.join('.' + f for f in FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    text = to_dot(graph, params)
    dot_path = path if fmt == "dot" else os.path.splitext(path)[0] + ".dot"
    if fmt == "dot" or shutil.which("dot") is None:
        _write(dot_path, text.encode())
        if fmt != "dot":
            print(f"chainrule: graphviz's `dot` program is not installed, so {dot_path} was written instead of "
                  f"{path}. Install it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) "
                  f"or paste the .dot file into an online graphviz viewer.")
        return dot_path
    result = subprocess.run(["dot", f"-T{fmt}"], input=text.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"render: dot failed: {result.stderr.decode(errors='replace').strip()}")
    _write(path, result.stdout)
    return path


def _write(path, data):
    """Write through a temporary file so a crash never leaves half a picture."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
