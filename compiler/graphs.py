"""Building graphs from graphs: replay a graph's nodes into the trace being built.

Autodiff copies the forward graph before it appends the backward; the passes rebuild a
graph node by node with some nodes rewritten; a nested `C.grad` inlines a derived graph
into the outer trace. All three are `replay`.
"""
from __future__ import annotations

from ops import ir
from ops.ir import Graph
from ops.primitive import REGISTRY, constant
from ops.tensor import Tensor


def new_input(trace, spec_node, index, name, source=None, kind="data"):
    return Tensor(trace.add("input", (), {"index": index, "kind": kind}, spec_node.shape, spec_node.dtype,
                            name=name, source=source if source is not None else spec_node.source, scope=(),
                            role="forward"))


def copy_node(node, inputs):
    """Apply node's op again, to new inputs, keeping its source line, scope and role.
    Inputs of the old inputs' shapes and dtypes give the node's own shape and dtype again
    (a shape rule reads nothing else), so then the node is added without asking its rule."""
    trace = ir.current_trace()
    if trace is not None and node.op != "const" and all(isinstance(i, Tensor) and i.node is not None for i in inputs):
        nodes = [i.node for i in inputs]
        if [(n.shape, n.dtype) for n in nodes] == [(n.shape, n.dtype) for n in node.inputs]:
            return Tensor(trace.add(node.op, nodes, node.attrs, node.shape, node.dtype, name=node.name,
                                    source=node.source, scope=node.scope, role=node.role))
    with ir.node_context(source=node.source, scope=node.scope, role=node.role):
        if node.op == "const":
            return constant(node.attrs["value"], node.attrs["dtype"])
        return REGISTRY[node.op].bind(inputs, node.attrs, name=node.name)


def replay(graph, inputs, rewrite=None):
    """Re-emit graph's nodes into the current trace with graph.inputs bound to `inputs`.

    rewrite(node, new_inputs) may return a Tensor to use instead of a copy of node; it runs
    in node's context (its source line, scope and role).
    Returns the dict old node -> new Tensor.
    """
    env = dict(zip(graph.inputs, inputs))
    for node in graph.nodes:
        if node in env:
            continue
        new_inputs = [env[i] for i in node.inputs]
        out = None
        if rewrite is not None:
            with ir.node_context(source=node.source, scope=node.scope, role=node.role):
                out = rewrite(node, new_inputs)
        env[node] = out if out is not None else copy_node(node, new_inputs)
    return env


def rebuild(graph, rewrite=None, name=None):
    """A new Graph: graph with `rewrite` applied to every node (see replay)."""
    trace = ir.Trace()
    with ir.tracing(trace):
        inputs = [new_input(trace, n, i, n.name, kind=n.attrs.get("kind", "data")) for i, n in enumerate(graph.inputs)]
        env = replay(graph, inputs, rewrite)
    return like(graph, [t.node for t in inputs], trace.nodes, [env[o].node for o in graph.outputs], name=name)


def like(graph, inputs, nodes, outputs, name=None):
    """A Graph with graph's name and output structure."""
    new = Graph(inputs, nodes, outputs, name=name or graph.name, output_names=graph.output_names)
    new.returns_tuple = getattr(graph, "returns_tuple", False)
    new.user_names = getattr(graph, "user_names", None)
    return new


def connected_parts(nodes, joined=lambda producer, consumer: True):
    """`nodes` split into the pieces their own edges connect (an edge counts when
    joined(producer, consumer)), each piece in the order of `nodes`. Fusion uses it to tell
    the independent parts of a horizontal kernel, the pictures to box each call of a scope."""
    members = set(nodes)
    part = {n: n for n in nodes}

    def root(n):
        while part[n] is not n:
            part[n] = part[part[n]]
            n = part[n]
        return n

    for n in nodes:
        for i in n.inputs:
            if i in members and joined(i, n):
                part[root(i)] = root(n)
    found = {}
    for n in nodes:
        found.setdefault(root(n), []).append(n)
    return list(found.values())


def carried_nodes(graph, carry):
    """compile(carry=...)'s (input position, output position) pairs as (input node, output
    node) of `graph`: the value that output j replaces at the next call."""
    return [(graph.inputs[i], graph.outputs[j]) for i, j in carry]
