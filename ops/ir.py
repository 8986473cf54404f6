"""The graph IR: SSA nodes that remember the user's source line.

A `Node` is one primitive applied to earlier nodes. A `Graph` is a list of nodes in
topological order with named inputs and outputs. Its text form is a short Python
program (think `jax.make_jaxpr`) that really runs: on NumPy arrays it computes the
reference answer, on `ops.spec`s it traces the same graph again.

Tracing state lives here too: while a `Trace` is active, every primitive applied to a
symbolic tensor appends a node to it. Autodiff and the passes build new graphs the
same way, so every graph in chainrule is made by one mechanism.
"""
from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .errors import ChainruleError
from .printer import graph_to_python
from .source import Source, capture_source, mark_as_user_code, source_text  # noqa: F401  (re-exported)

SHORT_DTYPE = {"float32": "f32", "float64": "f64", "int64": "i64", "int32": "i32", "bool": "bool"}


class Node:
    """One primitive application: `op(*inputs, **attrs)` of a known shape and dtype."""

    __slots__ = ("id", "op", "inputs", "attrs", "shape", "dtype", "name", "source", "scope", "role")

    def __init__(self, id, op, inputs, attrs, shape, dtype, name=None, source=None, scope=(), role="forward"):
        self.id = id
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = attrs
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name
        self.source = source
        self.scope = scope
        self.role = role

    @property
    def type_str(self):
        return f"{SHORT_DTYPE[self.dtype]}[{','.join(map(str, self.shape))}]"

    @property
    def numel(self):
        return int(math.prod(self.shape))

    @property
    def is_scalar_const(self):
        return self.op == "const" and self.shape == () and not isinstance(self.attrs["value"], np.ndarray)

    def __repr__(self):
        where = f" at {self.source}" if self.source else ""
        return f"<Node {self.name or self.id}: {self.op} -> {self.type_str}{where}>"


class Graph:
    """Inputs, nodes in topological order (inputs and constants included), outputs."""

    def __init__(self, inputs, nodes, outputs, name="f", output_names=None):
        self.inputs = list(inputs)
        self.nodes = list(nodes)
        self.outputs = list(outputs)
        self.name = name
        self.output_names = list(output_names) if output_names else None
        self.user_names = None      # a joint graph: the user's name of each input (x for primals_1)
        self.checks = ()            # value checks the tracer recorded (ops/trace.py: LabelCheck)

    # -- views -------------------------------------------------------------------------
    def users(self):
        """node -> list of nodes that read it (a node reading twice is listed twice)."""
        users = {n: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                users[i].append(n)
        return users

    def to_networkx(self):
        """A networkx DiGraph with one vertex per node id, for analyses and layout."""
        import networkx as nx  # optional: only analyses and layout ask for a networkx view

        dg = nx.DiGraph()
        for n in self.nodes:
            dg.add_node(n.id, op=n.op, shape=n.shape, dtype=n.dtype, name=n.name,
                        source=str(n.source) if n.source else "", role=n.role, node=n)
        for n in self.nodes:
            for i in n.inputs:
                dg.add_edge(i.id, n.id)
        return dg

    def op_counts(self):
        counts = {}
        for n in self.nodes:
            if n.op not in ("input", "const"):
                counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    @property
    def num_ops(self):
        return sum(self.op_counts().values())

    # -- text form -----------------------------------------------------------------------
    def __str__(self):
        return graph_to_python(self)

    def to_dot(self):
        return _drawer().to_dot(self, params=self.params())

    def params(self):
        """Inputs drawn as parameters: those a joint graph differentiates (primals_*) when
        they get a gradient, or inputs marked kind="param"."""
        return [n for n in self.inputs if n.attrs.get("kind") == "param"]

    def render(self, path, collapse="auto", expand=()):
        """Draw the graph with graphviz; the format comes from the suffix (svg, png, pdf, dot).
        A joint graph is drawn as the backward view (compiler/render.py). Large graphs draw
        each composite or layer call as one box; collapse=None draws every node, expand=
        names scopes to keep open."""
        drawer = _drawer()
        return drawer.render_dot(drawer.graph_dot(self, collapse=collapse, expand=expand), path)

    def _repr_svg_(self):
        drawer = _drawer()
        svg = drawer.to_image(drawer.graph_dot(self))
        return svg.decode() if svg is not None else None

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter: the picture (when graphviz is installed) and the program text."""
        svg = self._repr_svg_()
        bundle = {"text/plain": str(self)}
        if svg is not None:
            bundle["image/svg+xml"] = svg
        return bundle

    def __repr__(self):
        return f"<Graph {self.name}: {len(self.inputs)} inputs, {self.num_ops} ops, {len(self.outputs)} outputs>"


# -- drawing ---------------------------------------------------------------------------

_DRAWERS = []


def install_drawer(drawer):
    """Drawing a graph marks what only the compiler knows (values the backward saves, the
    chain rule's fan-in sums, kernels), so the picture is the compiler's: compiler/render.py
    installs itself here when the compiler is imported, and a Graph draws through it (a
    handler passed down, so that the IR never imports a layer above it)."""
    _DRAWERS[:] = [drawer]


def _drawer():
    if not _DRAWERS:
        raise ChainruleError("drawing a graph needs the compiler: import compiler first")
    return _DRAWERS[0]


# -- tracing state -------------------------------------------------------------------------

class Trace:
    """A graph under construction: primitives applied to its tensors append nodes."""

    def __init__(self):
        self.nodes = []
        self.checks = []            # value checks recorded while tracing (ops/trace.py: LabelCheck)
        self._next_id = 0

    def add(self, op, inputs, attrs, shape, dtype, name=None, source=None, scope=None, role=None):
        ctx = _context
        if source is None:
            source = ctx.source_override or capture_source()
        node = Node(self._next_id, op, inputs, attrs, shape, dtype, name, source,
                    ctx.scope if scope is None else scope, ctx.role if role is None else role)
        self._next_id += 1
        self.nodes.append(node)
        return node


class _Context:
    def __init__(self):
        self.traces = []
        self.scope = ()
        self.role = "forward"
        self.source_override = None


_context = _Context()


def current_trace():
    if not _context.traces:
        return None
    return _context.traces[-1]


@contextmanager
def tracing(trace):
    _context.traces.append(trace)
    try:
        yield trace
    finally:
        _context.traces.pop()


@contextmanager
def scope(name):
    """Nodes created inside belong to `name` (a composite op or a layer)."""
    saved = _context.scope
    _context.scope = saved + (name,)
    try:
        yield
    finally:
        _context.scope = saved


class node_context:
    """Autodiff and passes: new nodes inherit the source line, scope and role of the node
    they came from. A class rather than a generator: the passes open one per node."""

    __slots__ = ("source", "scope", "role", "saved")

    def __init__(self, source=None, scope=None, role=None):
        self.source, self.scope, self.role = source, scope, role

    def __enter__(self):
        self.saved = (_context.source_override, _context.scope, _context.role)
        if self.source is not None:
            _context.source_override = self.source
        if self.scope is not None:
            _context.scope = self.scope
        if self.role is not None:
            _context.role = self.role

    def __exit__(self, *exc):
        _context.source_override, _context.scope, _context.role = self.saved


def current_scope():
    return _context.scope


__all__ = ["Source", "Node", "Graph", "Trace", "tracing", "scope", "node_context", "current_trace",
           "capture_source", "mark_as_user_code", "source_text", "ChainruleError"]
