"""The reference evaluator: a graph run node by node with each primitive's NumPy code.

It is slow and exact (in float64 it is the yardstick every compiled kernel is checked
against). Each input's dtype is checked as `Program.run` checks it (ops/trace.py:
as_input); every check the tracer recorded on the graph runs on the value it names, an
input or a computed one (class labels: ops/trace.py LabelCheck); each result is checked
against the shape and dtype the tracer promised; and an intermediate is freed after its last
use, as a real runtime would. `eager` runs a DSL function on NumPy arrays this way (a layer
or an optimizer called outside a trace).
"""
from __future__ import annotations

import numpy as np

from .errors import ChainruleError
from .primitive import REGISTRY
from .trace import as_input, trace


def run_graph(graph, args):
    """Evaluate graph on NumPy arrays (one per input); returns a list of output arrays."""
    values = _run(graph, args, keep_all=False)
    return [np.array(values[o]) for o in graph.outputs]


def run_graph_values(graph, args):
    """Evaluate graph on NumPy arrays; returns {node: array} for every node (inputs and
    constants included), nothing freed: the values pictures and gradient checks look at."""
    return _run(graph, args, keep_all=True)


def _run(graph, args, keep_all):
    if len(args) != len(graph.inputs):
        raise ChainruleError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
    values = {}
    for node, value in zip(graph.inputs, args):
        value = np.asarray(value)
        if value.shape != node.shape:
            raise ChainruleError(f"{graph.name}: input {node.name} has shape {value.shape}, the graph was traced "
                                 f"for {node.shape}")
        values[node] = as_input(value, node.dtype, f"input {node.name} of {graph.name}")
    checks = {}
    for check in graph.checks:
        checks.setdefault(check.node, []).append(check)
    for node in graph.inputs:
        _verify(checks, node, values[node])
    last_use = {}
    for step, node in enumerate(graph.nodes):
        for i in node.inputs:
            last_use[i] = step
    keep = set(graph.outputs)
    with np.errstate(all="ignore"):
        for step, node in enumerate(graph.nodes):
            if node.op == "input":
                continue
            values[node] = _evaluate(node, [values[i] for i in node.inputs])
            _verify(checks, node, values[node])
            for i in set(node.inputs):
                if last_use[i] == step and i not in keep and not keep_all:
                    del values[i]
    return values


def _verify(checks, node, value):
    for check in checks.get(node, ()):
        check.verify(value, f"target {node.name}" if node.op == "input" else "the target")


def _evaluate(node, inputs):
    try:
        out = np.asarray(REGISTRY[node.op].impl(*inputs, **node.attrs))
    except Exception as e:   # name the node and the user's line, keep the original as the cause
        raise ChainruleError(f"the reference {node.op} failed on inputs of shapes "
                             f"{[np.shape(i) for i in inputs]}: {e}", op=node.op, source=node.source) from e
    if out.dtype != node.dtype:
        out = out.astype(node.dtype)
    if out.shape != node.shape:
        raise ChainruleError(f"the reference {node.op} returned shape {out.shape} but its shape rule promised "
                             f"{node.shape} (a bug in chainrule)", op=node.op, source=node.source)
    return out


class eager:
    """fn run on NumPy arrays: traced once per signature of its arguments and evaluated
    node by node; returns the list of its outputs."""

    def __init__(self, fn):
        self.fn, self.graphs = fn, {}

    def __call__(self, *arrays):
        arrays = [np.asarray(a) for a in arrays]
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = trace(self.fn, *arrays)      # each array's shape and dtype
        return run_graph(graph, arrays)
