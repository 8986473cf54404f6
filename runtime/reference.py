"""The reference executor: run a graph node by node with each primitive's NumPy code.

It is slow and exact (in float64 it is the yardstick every compiled kernel is checked
against). Each result is checked against the shape and dtype the tracer promised, and an
intermediate is freed after its last use, as a real runtime would.
"""
from __future__ import annotations

import numpy as np

from compiler.errors import ChainruleError
from ops.primitive import REGISTRY


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
        values[node] = value.astype(node.dtype, copy=False)
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
            for i in set(node.inputs):
                if last_use[i] == step and i not in keep and not keep_all:
                    del values[i]
    return values


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


class ReferenceExecutor:
    """Backend "reference": a compiled graph is just the graph."""

    name = "reference"

    def __init__(self, graph, carry=()):
        self.graph = graph
        self.carry = list(carry)           # (input index, output index): see runtime/triton_executor.py
        self.carried = None

    def load_state(self, arrays):
        self.carried = [np.array(a, dtype=self.graph.inputs[i].dtype) for (i, _), a in zip(self.carry, arrays)]

    def state(self):
        return [a.copy() for a in self.carried]

    def __call__(self, args):
        if not self.carry:
            return run_graph(self.graph, args)
        if self.carried is None:
            raise RuntimeError("this program carries state: call load_state(arrays) before running it")
        inputs, free = [None] * len(self.graph.inputs), iter(args)
        for (i, _), array in zip(self.carry, self.carried):
            inputs[i] = array
        inputs = [next(free) if a is None else a for a in inputs]
        outputs = run_graph(self.graph, inputs)
        self.carried = [outputs[j] for _, j in self.carry]
        carried_out = {j for _, j in self.carry}
        return [o for j, o in enumerate(outputs) if j not in carried_out]

    def source(self):
        return str(self.graph)

    def kernel_report(self):
        return []          # no kernels: one NumPy call per node

    def files(self):
        return []
