"""A graph's text form: a short Python program with a type and a source line per node.

    from ops.primitives import *

    def f(w: f32[3, 2], x: f32[4, 3]):
        t0 = matmul(x, w)                   # f32[4,2]            demo.py:5
        t1 = gt(t0, 0.0)                    # bool[4,2]   relu    demo.py:5
        ...

It runs: called with NumPy arrays it computes the reference values, and `C.trace` of it
gives the same graph back.
"""
from __future__ import annotations

import math
import re

import numpy as np

from .dtypes import promote, scalar_kind

HEADER = "from ops.primitives import *\n"


def literal(value, dtype=None):
    """Python source for a constant; a float32 prints as its shortest float32 spelling."""
    if isinstance(value, np.ndarray):
        text = np.array2string(value, separator=', ', threshold=10**9, max_line_width=10**9, floatmode='unique')
        text = re.sub(r"\n\s*", " ", text)                  # one line per node, whatever the rank
        return f"const({text}, dtype={value.dtype.name!r})"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        if dtype == "float32":
            return np.format_float_positional(np.float32(value), unique=True, trim="0")
    return repr(value)


# How the printed program spells a dtype: `f32[3, 2]` annotates an argument, `f64(0.5)` is a
# number of that dtype (names from `ops.primitives`; `bool` itself is Python's).
MAKER = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "b8"}


def _arguments(node, names):
    """The names of node's inputs. A scalar constant prints as a bare literal, which the
    tracer types like the other operands (torch's weak scalars); one whose dtype that would
    not give back is spelled with its dtype, `f64(1.0)`, so the program re-traces exactly."""
    literals = [i for i in node.inputs if i.is_scalar_const]
    typed = set()
    while True:
        strong = [i.dtype for i in node.inputs if not i.is_scalar_const or i in typed]
        weak = [scalar_kind(i.attrs["value"]) for i in literals if i not in typed]
        target = promote(strong, weak)
        wrong = [i for i in literals if i not in typed and i.dtype != target]
        if not wrong:
            break
        typed.add(wrong[0])             # one at a time: f64(1.0) / 8.0 makes the 8.0 a float64 too
    return [f"{MAKER[i.dtype]}({names[i]})" if i in typed else names[i] for i in node.inputs]


def _annotation(node):
    return f"{MAKER[node.dtype]}[{', '.join(map(str, node.shape)) or '()'}]"


def _attr(value):
    if isinstance(value, float):
        return literal(value)
    return repr(value)


def _scope(node):
    """The composite or layer a node belongs to; nothing when that is just the op itself."""
    return "" if node.scope == (node.op,) else ".".join(node.scope)


def value_names(graph):
    """node -> the name the printed program gives it: inputs by name, scalar constants as
    literals, everything else t0, t1, ... in order. Generated kernels use the same names."""
    names = {}
    for i, node in enumerate(graph.inputs):
        names[node] = node.name or f"arg{i}"
    taken = set(names.values())
    counter = 0
    for node in graph.nodes:
        if node.op == "input":
            continue
        if node.is_scalar_const:
            names[node] = literal(node.attrs["value"], node.dtype)
            continue
        while f"t{counter}" in taken:
            counter += 1
        names[node] = f"t{counter}"
        counter += 1
    return names


def node_code(node, names):
    """The printed statement of one node: `t3 = add(t1, t2)`."""
    if node.op == "const":
        call = literal(node.attrs["value"])
    else:
        args = _arguments(node, names) + [f"{k}={_attr(v)}" for k, v in node.attrs.items()]
        call = f"{node.op}({', '.join(args)})"
    return f"{names[node]} = {call}"


def node_comment(node, scope_width=0):
    """The comment of a printed node: its type, its composite, the user's line."""
    comment = f"{node.type_str:<14} {_scope(node):<{scope_width}}  {node.source or ''}".rstrip()
    return comment + (f"  ({node.role})" if node.role != "forward" else "")


def graph_to_python(graph, header=True, width=48):
    names = value_names(graph)
    body = [(node_code(node, names), node) for node in graph.nodes
            if node.op != "input" and not node.is_scalar_const]
    signature = ", ".join(f"{names[n]}: {_annotation(n)}" for n in graph.inputs)
    lines = [HEADER, ""] if header else []
    lines.append(f"def {graph.name}({signature}):")
    code_width = min(width, max((len(code) for code, _ in body), default=0))
    scope_width = max((len(_scope(node)) for _, node in body), default=0)
    for code, node in body:
        lines.append(f"    {code:<{code_width}}  # {node_comment(node, scope_width)}")
    outs = [names[o] for o in graph.outputs]
    ret = ", ".join(outs) + ("," if len(outs) == 1 and getattr(graph, "returns_tuple", False) else "")
    note = f"  # {', '.join(graph.output_names)}" if graph.output_names else ""
    lines.append(f"    return {ret}{note}")
    return "\n".join(lines) + "\n"
