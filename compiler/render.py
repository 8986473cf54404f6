"""Graphviz pictures of the compiler's stages: what a learner looks at.

Four views of one training step, drawn with one visual language:

* `forward_dot(graph)`: the traced program. Data inputs are grey ovals, parameters green
  ovals with a bold rim, ops rounded boxes labelled with the op and the type of the value
  they make, the output (the loss) amber. Hovering a node shows the user's line of code.
* `backward_dot(joint)`: the joint graph. The forward is drawn faded; the backward is orange
  and flows from the loss's seed gradient down to one `∂loss/∂param` per parameter. A value
  used n times receives n gradients, summed by a Σ node (the chain rule's sum over paths).
  Dashed edges bring the forward values the backward reuses (saved activations): everything
  they leave from stays in memory until the backward reads it, which is why memory peaks
  where the backward begins.
* `kernels_dot(joint, schedule)`: the same graph with every generated kernel drawn as a
  cluster, labelled with its name and the bytes it reads and writes; hovering (or, in an
  SVG viewer, clicking) names its file under `kernels/`. Views (transposes, broadcasts)
  cost no kernel and sit between clusters as small notes.
* `values_dot(graph, notes)`: any graph with per-node notes (values, gradients, errors) in
  the boxes, for the scalar and gradient-check views (compiler/inspect.py).

Large graphs: `collapse=` draws every call of a composite or a layer (its scope, e.g. all
the primitives of one batch_norm) as one double-rimmed box; `expand=` names scopes to keep
open. "auto" collapses graphs of more than AUTO_COLLAPSE ops. Without graphviz's `dot`
program (`find_dot`, the one place that looks for it; $CHAINRULE_DOT=none pretends it is
missing), `render` writes the .dot text and says, once per process, how to install graphviz;
it never crashes.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import ops.functional
from ops import ir
from ops.families import VIEW_OPS
from ops.ir import Graph, source_text
from ops.printer import literal, node_code, value_names

from .autodiff import FANOUT_SUM
from .cost import kernel_bytes
from .files import write_atomic
from .graphs import connected_parts
from .saved import saved_values

# colours (Tailwind's palette: light fills, dark text)
INPUT, PARAM, CONST, FORWARD, OUTPUT = "#f1f5f9", "#bbf7d0", "#f8fafc", "#dbeafe", "#fde68a"
BACKWARD, GRADIENT, SUM, FADED, VIEW = "#fed7aa", "#fb923c", "#fdba74", "#f8fafc", "#ffffff"
UPDATE = "#e9d5ff"             # a training step's update: forward nodes that read gradients
KERNEL_FILL, KERNEL_EDGE = "#f5f3ff", "#7c3aed"
SAVED_EDGE, EDGE, BACKWARD_EDGE = "#64748b", "#94a3b8", "#ea580c"
FORMATS = ("svg", "png", "pdf", "dot")
AUTO_COLLAPSE = 150            # "auto": graphs with more ops than this are drawn with collapsed scopes
LARGE = 150                    # pictures with more nodes than this are laid out with straight edges


def _escape(text):
    """A DOT string body: quotes and backslashes escaped, newlines as \\n."""
    return str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _attrs(attrs):
    return ", ".join(f'{k}="{_escape(v)}"' for k, v in attrs.items() if v is not None)


class Dot:
    """A DOT document under construction: nodes, edges and clusters, written in order."""

    def __init__(self, name, title=None, rankdir="TB"):
        self.lines = [f'digraph "{_escape(name)}" {{',
                      f'  graph [rankdir={rankdir}, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.32'
                      + (f', label="{_escape(title)}", labelloc=t, fontsize=13' if title else "") + "];",
                      '  node [fontname="Helvetica", fontsize=10, style="filled,rounded", shape=box, penwidth=0.8];',
                      f'  edge [color="{EDGE}", arrowsize=0.6];']
        self.edges = set()
        self.nodes = 0

    def node(self, key, label, indent="  ", **attrs):
        self.nodes += 1
        self.lines.append(f'{indent}{key} [{_attrs({"label": label, **attrs})}];')

    def edge(self, a, b, **attrs):
        if (a, b) in self.edges or a == b:
            return
        self.edges.add((a, b))
        self.lines.append(f"  {a} -> {b}" + (f" [{_attrs(attrs)}]" if attrs else "") + ";")

    def open_cluster(self, key, label, **attrs):
        self.lines.append(f"  subgraph cluster_{key} {{")
        self.lines.append(f"    graph [{_attrs({'label': label, **attrs})}];")

    def close_cluster(self):
        self.lines.append("  }")

    def text(self):
        lines = list(self.lines)
        if self.nodes > LARGE:
            # dot's spline router and network simplex take minutes on a few hundred nodes with
            # long edges (a ResNet's saved values); straight edges and one simplex pass take seconds
            lines.insert(2, "  graph [splines=false, nslimit=1, nslimit1=1];")
        return "\n".join(lines + ["}"]) + "\n"


# -- what each node looks like ---------------------------------------------------------------

def _tooltip(node, names):
    code = node_code(node, names) if node.op not in ("input", "const") else f"{names[node]}: {node.type_str}"
    line = source_text(node.source).strip() if node.source else ""
    where = f"{node.source}: {line}" if line else str(node.source or "")
    scope = f"in {'.'.join(node.scope)}" if node.scope and node.scope != (node.op,) else ""
    return "\n".join(part for part in (code, scope, where) if part)


def _is_sum(node):
    return node.op == "add" and FANOUT_SUM in node.scope


def _op_label(node):
    scalars = [literal(i.attrs["value"], i.dtype) for i in node.inputs if i.is_scalar_const]
    extra = f" ({', '.join(scalars)})" if scalars else ""
    return f"{node.op}{extra}\n{node.type_str}"


def _look(node, names, params, outputs, output_names, faded=False):
    """(label, attributes) of one node in the forward/backward language."""
    tooltip = _tooltip(node, names)
    if node.op == "input":
        param = node in params
        return (f"{names[node]}\n{node.type_str}",
                {"shape": "ellipse", "fillcolor": PARAM if param else INPUT, "penwidth": "1.6" if param else None,
                 "tooltip": tooltip + ("\na parameter: the step computes its gradient" if param else "")})
    if node.op == "const":
        return f"const\n{node.type_str}", {"shape": "note", "fillcolor": CONST, "tooltip": tooltip}
    if node in outputs:
        name = output_names.get(node)
        if node.role == "backward":
            label = f"{name or 'gradient'}\n{_op_label(node)}"
            return label, {"fillcolor": GRADIENT, "penwidth": "2", "tooltip": tooltip}
        return f"{name or 'output'}\n{_op_label(node)}", {"fillcolor": OUTPUT, "penwidth": "2", "tooltip": tooltip}
    if _is_sum(node):
        return "Σ", {"shape": "circle", "fillcolor": SUM, "fontsize": "14", "width": "0.3", "fixedsize": "true",
                     "tooltip": tooltip + "\na value read by several nodes gets a gradient from each: their sum is "
                                          "its gradient (the chain rule's sum over paths)"}
    if faded:
        return _op_label(node), {"fillcolor": FADED, "fontcolor": "#94a3b8", "color": "#cbd5e1",
                                 "tooltip": tooltip}
    fill = BACKWARD if node.role == "backward" else FORWARD
    return _op_label(node), {"fillcolor": fill, "tooltip": tooltip}


def _output_names(graph, grad_words=False):
    """node -> the name the picture gives an output: 'loss', '∂loss/∂w' (joint graphs)."""
    names = {}
    given = graph.output_names or []
    for k, node in enumerate(graph.outputs):
        name = given[k] if k < len(given) else None
        if name == "value":
            name = "loss"
        elif name and name.startswith("grad_") and grad_words:
            name = f"∂loss/∂{name[5:]}"
        names.setdefault(node, name)
    return names


# -- collapsing scopes ------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _composite_names():
    """The DSL's op names (ops imports compiler: looked up on first use, not at import)."""
    return frozenset(ops.functional.__all__)


def collapsed_groups(graph, collapse="auto", expand=()):
    """node -> group key for the nodes drawn as one box: each call of a scope (a composite op
    or a layer) at depth `collapse` (1: the outermost), split into connected pieces, unless
    its name is in `expand`. "auto": depth 1 for graphs of more than AUTO_COLLAPSE ops."""
    if collapse == "auto":
        collapse = 1 if graph.num_ops > AUTO_COLLAPSE else None
    if not collapse:
        return {}
    depth = int(collapse)
    key = {}
    outputs = set(graph.outputs)           # drawn on their own: the loss, the gradients
    for node in graph.nodes:
        if node.op in ("input", "const") or len(node.scope) < depth or _is_sum(node) or node in outputs:
            continue
        prefix = node.scope[:depth]
        if any(name in expand for name in prefix):
            continue
        # a composite op is one call per line; a block the user named (O.scope) spans lines
        line = str(node.source) if prefix[-1] in _composite_names() else ""
        key[node] = (prefix, line, node.role)
    # one box per connected piece: two calls of conv2d on two lines are two boxes
    pieces = connected_parts(list(key), lambda producer, consumer: key[producer] == key[consumer])
    return {n: members[-1] for members in pieces if len(members) > 1 for n in members}


def _collapsed_look(members, names, depth):
    last = members[-1]
    scope = last.scope[depth - 1]                  # the scope the box stands for
    ops = [m.op for m in members]
    fill = BACKWARD if last.role == "backward" else FORWARD
    body = ", ".join(dict.fromkeys(ops))
    tooltip = (f"{len(members)} nodes of {scope}{' (backward)' if last.role == 'backward' else ''}: {body}\n"
               f"{_tooltip(last, names)}\ndraw them with expand={{'{scope}'}}")
    label = f"{scope}{' (backward)' if last.role == 'backward' else ''}\n×{len(members)} ops\n{last.type_str}"
    return label, {"fillcolor": fill, "peripheries": "2", "tooltip": tooltip}


# -- the views ---------------------------------------------------------------------------------

def _draw(dot, graph, names, params, faded=(), collapse=None, expand=(), notes=None, grad_words=False,
          scopes=False, renamed=None):
    """Nodes of `graph` (a collapsed scope as one box; with `scopes`, each call of a
    composite or layer as a dashed cluster); returns node -> the DOT key it is drawn as."""
    outputs = set(graph.outputs)
    output_names = _output_names(graph, grad_words)
    boxes = collapsed_groups(graph, collapse, expand) if collapse else {}
    depth = 1 if collapse == "auto" else int(collapse or 1)
    clusters = collapsed_groups(graph, 1) if scopes and not boxes else {}
    members = {}
    for node, head in {**boxes, **clusters}.items():
        members.setdefault(head, []).append(node)
    key_of = {}

    def one(node, indent="  "):
        key_of[node] = f"n{node.id}"
        label, attrs = _look(node, names, params, outputs, output_names, faded=node in faded)
        if renamed and node in renamed:
            label = f"{renamed[node]}\n{label}"
        if notes and node in notes:
            note = notes[node]
            label = f"{label}\n{note['text']}" if note.get("text") else label
            attrs.update({k: v for k, v in note.items() if k != "text"})
        dot.node(key_of[node], label, indent=indent, **attrs)

    for node in graph.nodes:
        if node.is_scalar_const or node in key_of:
            continue                         # a scalar is written into the label of its user
        head = boxes.get(node)
        if head is not None:
            key_of[node] = f"g{head.id}"
            if node is head:
                label, attrs = _collapsed_look(members[head], names, depth)
                if head in faded:
                    attrs.update(fillcolor=FADED, fontcolor="#94a3b8", color="#cbd5e1")
                dot.node(key_of[node], label, **attrs)
            continue
        head = clusters.get(node)
        if head is None:
            one(node)
            continue
        group = members[head]
        where = f" · {head.source}" if head.source else ""
        dot.open_cluster(f"s{head.id}", f"{'.'.join(head.scope[:1])}{where}", style="dashed,rounded",
                         color="#94a3b8", fontcolor="#475569", fontsize="10",
                         tooltip=f"{len(group)} primitives of one {head.scope[0]} call")
        for member in group:
            one(member, "    ")
        dot.close_cluster()
    return key_of


def _edges(dot, graph, key_of, style=None):
    for node in graph.nodes:
        for i in node.inputs:
            if i in key_of and node in key_of:
                dot.edge(key_of[i], key_of[node], **((style or {}).get((i, node)) or {}))


def forward_dot(graph, params=None, collapse="auto", expand=(), title=None, output_name=None):
    """The DOT text of a forward graph (see the module docstring): each call of a composite op
    a dashed cluster (or, collapsed, one box); `output_name` labels the output ("loss")."""
    names = value_names(graph)
    params = set(graph.params() if params is None else params)
    dot = Dot(graph.name, title)
    if output_name and not graph.output_names:
        graph = _named_outputs(graph, [output_name] * len(graph.outputs))
    key_of = _draw(dot, graph, names, params, collapse=collapse, expand=expand, scopes=True)
    _edges(dot, graph, key_of)
    return dot.text()


def _named_outputs(graph, names):
    return Graph(graph.inputs, graph.nodes, graph.outputs, graph.name, output_names=names)


def backward_dot(joint, collapse="auto", expand=(), title=None, input_names=None, whole_step=False, params=None):
    """The DOT text of a joint graph: the backward in colour, the forward faded, dashed edges
    for the values the backward reuses. input_names: {joint input: the user's name}, drawn
    above primals_N. whole_step: a training step (forward, backward and the optimizer's update
    in one trace): nothing faded, the update (what reads the gradients) in purple."""
    names = value_names(joint)
    if input_names is None:                 # the user's names that autodiff kept (x for primals_1)
        input_names = {n: u for n, u in zip(joint.inputs, getattr(joint, "user_names", None) or []) if u}
    forward = {n for n in joint.nodes if n.role != "backward" and n.op not in ("input", "const")}
    saved = {(v.node, r) for v in saved_values(joint) for r in v.readers}
    dot = Dot(joint.name, title)
    notes = {}
    if whole_step:              # the update: forward-role work that neither the loss nor the backward needs
        needed = {n for n in joint.nodes if n.role == "backward"} | set(joint.outputs[:1])
        for n in reversed(joint.nodes):
            if n in needed:
                needed.update(n.inputs)
        notes = {n: {"fillcolor": UPDATE, "tooltip": f"{_tooltip(n, names)}\nthe update: after the backward"}
                 for n in forward if n not in needed and n not in joint.outputs}
    params = set(joint.params() if params is None else params)
    key_of = _draw(dot, joint, names, params, faded=() if whole_step else forward - set(joint.outputs),
                   collapse=collapse, expand=expand, grad_words=True, renamed=input_names, notes=notes)
    style = {}
    for node in joint.nodes:
        for i in node.inputs:
            if (i, node) in saved or (node.role == "backward" and i.role != "backward"
                                      and i.op not in ("input", "const")):
                style[(i, node)] = {"style": "dashed", "color": SAVED_EDGE,
                                    "tooltip": f"{names[i]} is saved by the forward for the backward"}
            elif node.role == "backward" and i.role == "backward":
                style[(i, node)] = {"color": BACKWARD_EDGE, "penwidth": "1.2"}
    _edges(dot, joint, key_of, style)
    # where the backward starts: the loss's own gradient, 1, folded by the chain rule into the
    # first backward nodes (one reading nothing but constants, or 1.0 times a partial derivative)
    label = " seed: ∂loss/∂loss = 1"
    for node in seed_takers(joint):
        if node in key_of and joint.outputs[0] in key_of:
            dot.edge(key_of[joint.outputs[0]], key_of[node], style="dotted", color=BACKWARD_EDGE, label=label,
                     fontsize="9", fontcolor=BACKWARD_EDGE)
            label = ""
    return dot.text()


def seed_takers(joint):
    """The backward nodes the seed ∂loss/∂loss = 1 enters: those reading nothing but constants,
    or 1.0 times a partial derivative; once simplify has folded the 1 away, the backward's
    roots (nodes reading no backward value, masks aside). None unless output 0 is the value
    differentiated (a joint graph's "value", a training step's "loss")."""
    if not joint.outputs or (joint.output_names or [None])[0] not in ("value", "loss"):
        return []
    backward = [n for n in joint.nodes if n.role == "backward"]
    takers = [n for n in backward if n.inputs and all(i.op == "const" for i in n.inputs) or (
        n.op == "mul" and all(i.role != "backward" or i.op == "const" for i in n.inputs)
        and any(i.is_scalar_const and i.attrs["value"] == 1.0 for i in n.inputs))]
    if takers:
        return takers
    carries = set()              # backward values that carry the gradient (a view of a forward value does not)
    for n in backward:            # a constant carries none (1 / count: the seed enters the div reading it)
        if n.op != "const" and (n.op not in VIEW_OPS or any(i in carries for i in n.inputs)):
            carries.add(n)
    return [n for n in backward if n in carries and n.op not in ("gt", "ge", "lt", "le", "eq", "ne")
            and any(i.op != "const" for i in n.inputs) and not any(i in carries for i in n.inputs)]


def kernels_dot(graph, schedule, names=None, collapse="auto", title=None):
    """The DOT text of a graph with each kernel of `schedule` (compiler/lower.py) drawn as a
    cluster; "auto" draws a kernel as one box when the graph has more than AUTO_COLLAPSE ops."""
    names = names or value_names(graph)
    users_names = {n: u for n, u in zip(graph.inputs, getattr(graph, "user_names", None) or []) if u}
    whole = collapse == "auto" and graph.num_ops > AUTO_COLLAPSE or collapse is True
    dot = Dot(graph.name, title)
    params = set(graph.params())
    outputs = set(graph.outputs)
    output_names = _output_names(graph, grad_words=True)
    key_of = {}
    for kernel in schedule.kernels:
        reads, writes = kernel_bytes(kernel)
        file = f"kernels/{kernel.index:02d}_{kernel.label}.py"
        label = f"{kernel.name}\nreads {_bytes(reads)}, writes {_bytes(writes)}"
        tooltip = f"{file}: {len(kernel.nodes)} nodes, {', '.join(dict.fromkeys(n.op for n in kernel.nodes))}"
        if whole:
            key = f"k{kernel.index}"
            for n in kernel.nodes:
                key_of[n] = key
            dot.node(key, f"{label}\n{len(kernel.nodes)} nodes", fillcolor=KERNEL_FILL, color=KERNEL_EDGE,
                     tooltip=tooltip, URL=file)
            continue
        dot.open_cluster(f"k{kernel.index}", label, style="rounded,filled", fillcolor=KERNEL_FILL,
                         color=KERNEL_EDGE, fontcolor=KERNEL_EDGE, tooltip=tooltip, URL=file)
        for node in kernel.nodes:
            key_of[node] = f"n{node.id}"
            look, attrs = _look(node, names, params, outputs, output_names)
            dot.node(key_of[node], look, indent="    ", **attrs)
        dot.close_cluster()
    for node in graph.nodes:
        if node in key_of or node.is_scalar_const:
            continue
        key_of[node] = f"n{node.id}"
        if node.op in ("input", "const"):
            look, attrs = _look(node, names, params, outputs, output_names)
            if node in users_names:                 # the user's name above primals_N
                look = f"{users_names[node]}\n{look}"
        else:          # a view: no kernel, the next kernel reads through its strides
            look, attrs = (f"{node.op}\n{node.type_str}",
                           {"shape": "note", "fillcolor": VIEW, "fontsize": "8", "color": "#cbd5e1",
                            "tooltip": _tooltip(node, names) + "\na view: no kernel, the reader's addresses "
                                                                "follow its strides"})
        dot.node(key_of[node], look, **attrs)
    _edges(dot, graph, key_of)
    return dot.text()


def values_dot(graph, notes, title=None, collapse=None):
    """A graph with notes in its boxes: notes[node] = {"text": ..., and DOT attributes such
    as "fillcolor" or "tooltip"} (compiler/inspect.py draws values, gradients and errors)."""
    names = value_names(graph)
    dot = Dot(graph.name, title)
    key_of = _draw(dot, graph, names, set(graph.params()), notes=notes, collapse=collapse)
    _edges(dot, graph, key_of)
    return dot.text()


def to_dot(graph, params=()):
    """The DOT text of a graph in the forward view (backward nodes in their colour)."""
    return forward_dot(graph, params=params or None)


def graph_dot(graph, collapse="auto", expand=()):
    """What `Graph.render` draws: a joint graph as the backward view, else the forward one."""
    if any(n.role == "backward" for n in graph.nodes):
        return backward_dot(graph, collapse=collapse, expand=expand)
    return forward_dot(graph, collapse=collapse, expand=expand)


def _bytes(n):
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# -- writing files ------------------------------------------------------------------------------

DOT_PROGRAM = "CHAINRULE_DOT"     # environment: the graphviz program to lay pictures out with; "none": no pictures
INSTALL_GRAPHVIZ = ("Install graphviz to get the pictures (Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
                    "graphviz; conda: conda install -c conda-forge graphviz), or paste a .dot file into an online "
                    "graphviz viewer")
_told_to_install = False          # the install advice is printed once per process, not once per picture


def find_dot():
    """The graphviz `dot` program that lays out every picture, or None when there is none.
    The one place that looks for it, so that all the pictures (files, Jupyter, the CLI, the
    tutorials) fall back together: $CHAINRULE_DOT names the program (`none`: behave as if
    graphviz were missing, to see or test the fallback), else `dot` on PATH."""
    chosen = os.environ.get(DOT_PROGRAM, "dot")
    return None if chosen.strip().lower() == "none" else shutil.which(chosen)


def render_dot(text, path, quiet=False):
    """Write DOT text to path; the format comes from the suffix (svg, png, pdf or dot).
    Returns the path written: the .dot file when graphviz's `dot` program is missing (the
    first time, with a message saying how to install it; never with quiet=True) or fails
    (with dot's error)."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"render: cannot tell the format from {path!r}; use a name ending in "
                         f"{', '.join('.' + f for f in FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    dot_path = path if fmt == "dot" else os.path.splitext(path)[0] + ".dot"
    if fmt == "dot":
        write_atomic(dot_path, text.encode())
        return dot_path
    try:
        image = to_image(text, fmt)
    except RuntimeError as failure:
        write_atomic(dot_path, text.encode())
        print(f"chainrule: {failure}; {dot_path} was written instead of {path}")
        return dot_path
    if image is None:
        write_atomic(dot_path, text.encode())
        if not quiet:
            _advise_install(dot_path, path)
        return dot_path
    write_atomic(path, image)
    return path


def _advise_install(dot_path, wanted):
    """Say, once per process, that pictures come out as .dot files and how to get graphviz."""
    global _told_to_install
    if _told_to_install:
        return
    _told_to_install = True
    chosen = os.environ.get(DOT_PROGRAM)
    missing = ("graphviz's `dot` program is not installed" if chosen is None
               else f"${DOT_PROGRAM}=none turns graphviz off" if chosen.strip().lower() == "none"
               else f"${DOT_PROGRAM}={chosen!r} names no program")
    print(f"chainrule: {missing}, so {dot_path} was written instead of {wanted} (and every picture "
          f"after it is written as its .dot source too). {INSTALL_GRAPHVIZ}.")


def to_image(text, fmt="svg"):
    """DOT text laid out by graphviz's `dot`, as bytes of `fmt`; None without `dot`
    (find_dot). Raises RuntimeError, with dot's message, when dot fails."""
    dot = find_dot()
    if dot is None:
        return None
    result = subprocess.run([dot, f"-T{fmt}"], input=text.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"render: dot failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def render(graph, path, params=()):
    """Write a graph's picture to path (svg, png, pdf or dot); see `render_dot`."""
    return render_dot(to_dot(graph, params), path)


ir.install_drawer(sys.modules[__name__])     # Graph.render, Graph.to_dot and Jupyter draw through this module
