"""Simplify: dead-code elimination, common-subexpression elimination, constant folding and
algebraic identities (x*1, x+0, double transposes, ...). Each is a function Graph -> Graph.

Run after autodiff: the chain rule writes many `g * 1.0` and `reshape` pairs, and the
forward and backward often compute the same value twice; here they go away.
"""
from __future__ import annotations

import numpy as np

from ops import ir
from ops import primitives as P
from ops.families import SOURCE_OPS
from ops.primitive import REGISTRY, constant
from ops.tensor import Tensor

from .graphs import copy_node, like, rebuild


def dce(graph):
    """Keep only the nodes an output depends on (inputs always stay: they are the signature)."""
    live, stack = set(), list(graph.outputs)
    while stack:
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack.extend(node.inputs)
    nodes = [n for n in graph.nodes if n in live or n.op == "input"]
    if len(nodes) == len(graph.nodes):
        return graph
    return like(graph, graph.inputs, nodes, graph.outputs)


def _key(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.name, value.shape, value.tobytes())
    if isinstance(value, dict):
        return tuple((k, _key(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    return (type(value).__name__, value)


COMMUTATIVE = ("add", "mul", "maximum", "minimum", "eq", "ne")


def cse(graph):
    """Two nodes with the same op, inputs and attributes compute the same value: keep one;
    for a commutative op, inputs in either order (0.5·x and x·0.5). (Random numbers too:
    `rand` is a function of its seed.)"""
    seen = {}

    def rewrite(node, inputs):
        ids = tuple(t.node.id for t in inputs)
        key = (node.op, tuple(sorted(ids)) if node.op in COMMUTATIVE else ids, _key(node.attrs))
        if key not in seen:
            seen[key] = copy_node(node, inputs)
        return seen[key]

    return rebuild(graph, rewrite)


def _splat_value(t):
    """The value of a scalar constant, or of a scalar constant broadcast to a shape; else None."""
    n = t.node
    if n.op == "expand" and n.inputs[0].is_scalar_const:
        n = n.inputs[0]
    return n.attrs["value"] if n.is_scalar_const else None


def _is(t, value):
    """Is t the constant `value`, a scalar or broadcast (x * expand(1.0) is x when the shapes
    agree; the caller checks that)?"""
    found = _splat_value(t)
    return found is not None and found == value and not isinstance(found, bool)


def fold_constants(graph):
    """A pointwise op or a reduction-free scalar op whose inputs are all constants (scalars, or
    scalars broadcast) is itself a constant: computed now, once, instead of in every run."""
    def rewrite(node, inputs):
        if not inputs or node.op in ("input", "const") or node.op in SOURCE_OPS:
            return None
        values = [_splat_value(t) for t in inputs]
        if any(v is None for v in values):
            return None
        if node.op in ("reshape", "expand", "permute", "slice"):       # a splat in a new shape
            return P.expand(constant(values[0], node.dtype), shape=node.shape)
        if REGISTRY[node.op].family != "pointwise" and any(t.shape != () for t in inputs):
            return None     # a reduction of a splat is not the splat's value (sum(splat) = n·value)
        with np.errstate(all="ignore"):
            value = REGISTRY[node.op].impl(*(np.asarray(v, dtype=t.dtype) for v, t in zip(values, inputs)),
                                           **node.attrs)
        scalar = constant(np.asarray(value).astype(node.dtype).item(), node.dtype)
        return scalar if node.shape == () else P.expand(scalar, shape=node.shape)

    return rebuild(graph, rewrite)


def _same_type(t, node):
    return t.shape == node.shape and t.dtype == node.dtype


def algebraic(graph, drop_detach=True):
    """x+0, x-0, x*1, 1*x, x/1, x**1, --x, identity reshapes/permutes/casts/expands,
    permute∘permute, reshape∘reshape, and (a @ b)ᵀ = bᵀ @ aᵀ when the product has no other
    reader: the gradient of a Linear weight (out, in) then comes out of its GEMM in the
    weight's own layout, so the optimizer's update can be that GEMM's epilogue instead of
    a kernel after a transpose. Each rule applies only when the result keeps the node's
    shape and dtype (x*1 with broadcasting is not x)."""
    users = graph.users()

    def rewrite(node, inputs):
        op, a = node.op, node.attrs
        x = inputs[0] if inputs else None
        y = inputs[1] if len(inputs) > 1 else None
        candidate = None
        if op == "add":
            candidate = x if _is(y, 0) else y if _is(x, 0) else None
        elif op == "sub" and _is(y, 0):
            candidate = x
        elif op == "mul":
            candidate = x if _is(y, 1) else y if _is(x, 1) else None
        elif op in ("div", "pow") and _is(y, 1):
            candidate = x
        elif op == "neg" and x.node.op == "neg":
            candidate = _tensor_of(x.node.inputs[0])
        elif op in ("reshape", "expand", "permute", "cast"):
            if _same_type(x, node) and (op != "permute" or a["dims"] == tuple(range(len(node.shape)))):
                candidate = x
            elif op == "expand" and x.node.op == "reshape" and x.node.inputs[0].shape == ():
                return P.expand(_tensor_of(x.node.inputs[0]), shape=a["shape"])    # a splat of a scalar
            elif op == "reshape" and x.node.op == "reshape":
                return P.reshape(_tensor_of(x.node.inputs[0]), shape=a["shape"])
            elif op == "permute" and x.node.op == "permute":
                inner = x.node.attrs["dims"]
                dims = tuple(inner[d] for d in a["dims"])
                source = _tensor_of(x.node.inputs[0])
                return source if dims == tuple(range(len(dims))) else P.permute(source, dims=dims)
            elif op == "permute" and x.node.op == "matmul" and _swaps_last_two(a["dims"]) \
                    and len(users[node.inputs[0]]) == 1:
                left, right = (_tensor_of(i) for i in x.node.inputs)
                product = node.inputs[0]         # the new nodes are the product's: its line, scope and role
                with ir.node_context(source=product.source, scope=product.scope, role=product.role):
                    return P.matmul(P.permute(right, dims=a["dims"]), P.permute(left, dims=a["dims"]))
        elif op == "detach" and drop_detach:
            candidate = x
        elif op == "where" and inputs[1].node is inputs[2].node:
            candidate = inputs[1]
        if candidate is not None and _same_type(candidate, node):
            return candidate
        return None

    return rebuild(graph, rewrite)


def _swaps_last_two(dims):
    n = len(dims)
    return n >= 2 and tuple(dims) == (*range(n - 2), n - 1, n - 2)


def _tensor_of(node):
    return Tensor(node)


def simplify(graph, drop_detach=True, max_rounds=4):
    """Fold, CSE, identities and DCE until nothing changes."""
    for _ in range(max_rounds):
        before = len(graph.nodes)
        graph = dce(algebraic(cse(fold_constants(graph)), drop_detach=drop_detach))
        if len(graph.nodes) == before:
            break
    return graph
