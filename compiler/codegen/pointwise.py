"""Pointwise kernels: one program computes BLOCK consecutive elements of the output.

A kernel computes a list of pointwise nodes over one iteration space (the shape of its
outputs). Each input is read through its view, broadcast to that space by stride-0
dimensions; each node becomes one line of Triton, named like the graph's value and
commented with the node it computes. `copy`, `pad`, `cat`, `iota` and `rand` are
pointwise too: only their loads are special.
"""
from __future__ import annotations

import re

from ops.errors import BackendError
from ops.families import VIEW_OPS
from ops.printer import node_code

from ..lower import Literal, View, contiguous_strides
from . import blocks
from .common import TL_DTYPE, KernelSource, address, digits, dims_needed, literal_code

# Triton for each pointwise primitive: a format string over the input expressions.
EXPRESSIONS = {
    "neg": "-{0}", "exp": "tl.exp({0})", "log": "tl.log({0})", "sqrt": "tl.sqrt({0})", "abs": "tl.abs({0})",
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}",
    # NaN wins a maximum or minimum, as in torch and NumPy (Triton's default drops it)
    "maximum": "tl.maximum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "minimum": "tl.minimum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}", "ge": "{0} >= {1}", "eq": "{0} == {1}",
    "ne": "{0} != {1}", "where": "tl.where({0}, {1}, {2})", "detach": "{0}",
    "sign": "tl.where({0} > 0, 1, tl.where({0} < 0, -1, 0)).to({dtype})",
    "tanh": "tanh({0})", "sigmoid": "sigmoid({0})", "pow": "power({0}, {1})", "cast": "{0}.to({dtype})",
    "erf": "tl.math.erf({0})",     # libdevice's erf on a GPU; the interpreter computes it with math.erf
}

# Helpers written into the file when a kernel needs them (Triton's interpreter has no
# libdevice, so these are spelled with exp and log; both forms are exact to float rounding).
HELPERS = {
    "sigmoid": ["@triton.jit", "def sigmoid(x):",
                "    # 1 / (1 + e^-x), computed with e^-|x| so that it never overflows",
                "    e = tl.exp(-tl.abs(x))",
                "    return tl.where(x >= 0, 1 / (1 + e), e / (1 + e))"],
    "tanh": ["@triton.jit", "def tanh(x):",
             "    # (1 - e^-2|x|) / (1 + e^-2|x|), with the sign of x",
             "    e = tl.exp(-2 * tl.abs(x))",
             "    t = (1 - e) / (1 + e)",
             "    return tl.where(x >= 0, t, -t)"],
    "pow": ["@triton.jit", "def power(x, y):",
            "    # x ** y as e^(y ln|x|); a negative x needs an integer y, whose parity gives the sign",
            "    # |x| = 1 gives 1 for any y, inf or NaN too (as torch), not e^(inf * 0)",
            "    log_abs = tl.log(tl.abs(x))",
            "    magnitude = tl.where(log_abs == 0, 1.0, tl.exp(y * log_abs))",
            "    y_is_int = y == tl.floor(y)",
            "    odd = y_is_int & (tl.abs(y - 2 * tl.floor(y / 2)) == 1)",
            "    negative = tl.where(y_is_int, tl.where(odd, -magnitude, magnitude), float('nan'))",
            "    return tl.where(y == 0, 1.0, tl.where(x < 0, negative, magnitude))"],
}


def generate(kernel, names, target):
    computed = [n for n in kernel.nodes if n.op != "expand"]
    src = KernelSource(kernel, names, family_note="pointwise" if len(computed) == 1 else
                       f"{len(computed)} pointwise nodes fused: the intermediates stay in registers")
    n, lines = segment(kernel, names, src, "tl.program_id(0)")
    ins, outs = src.pointer_args()
    params = ", ".join([f"{p}_ptr" for p in ins + outs] + ["BLOCK: tl.constexpr"])
    src.body = ["@triton.jit", f"def {kernel.name}({params}):",
                f"    # one program computes BLOCK elements of the {kernel.outputs[0].type_str} output, in row-major "
                "order"] + lines
    args = ", ".join(ins + outs)
    src.launch = blocks.launch_lines(kernel.name, args, *blocks.pointwise(n), f"(triton.cdiv({n}, BLOCK),)")
    return src.text()


def iteration_shape(kernel):
    """The shape a pointwise kernel's lanes walk: its output's (a reshape copy walks its input's)."""
    root = kernel.root
    return root.inputs[0].shape if root.op == "reshape" else kernel.outputs[0].shape


def segment(kernel, names, src, program):
    """(elements, the body's lines) of a pointwise kernel whose program number
    is `program`: the lanes' offsets, the loads, one line per node, the stores. The body of a
    pointwise kernel, or one branch of a horizontal one (codegen/horizontal.py)."""
    # A reshape copies its input in row-major order: iterate over the input's shape, store flat.
    root = kernel.root
    shape = iteration_shape(kernel)
    n = max(1, _numel(shape))
    special = set(root.inputs) if root.op in ("pad", "cat") else set()   # loaded with masks of their own
    views = {}
    for node, view in kernel.inputs.items():
        broadcast = isinstance(view, View) and node not in special and view.shape != shape
        views[node] = view.expand(shape) if broadcast else view
    needed = set(range(len(shape))) if any(n.op in ("iota", "pad", "cat") for n in kernel.nodes) else set()
    for node, view in views.items():
        if isinstance(view, View) and not _is_flat(view, shape):
            needed |= dims_needed(view)
    index_lines, index = digits(shape, "offs", only=needed)

    body = [f"    offs = {program} * BLOCK + tl.arange(0, BLOCK)",
            f"    mask = offs < {n}"]
    body += [_commented(line, f"index along dim {d}") for d, line in index_lines]
    value = {}
    for node, view in views.items():
        if isinstance(view, Literal):
            value[node] = literal_code(view)
        elif node not in special and not dims_needed(view):      # one value for every element
            body.append(f"    {names[node]} = tl.load({names[node]}_ptr + {view.offset})")
            value[node] = names[node]
        elif node not in special:
            where = _flat(view) if _is_flat(view, shape) else address(view, index)
            body.append(f"    {names[node]} = tl.load({names[node]}_ptr + {where}, mask=mask)")
            value[node] = names[node]
    for node in kernel.nodes:
        if node.op in VIEW_OPS:          # a copy or a broadcast: the load did the work, the register is the same
            value[node] = value.get(node.inputs[0])
            continue
        lines = _compute(node, value, views, index, names, src)
        body += [f"    {line}" for line in lines[:-1]]
        body.append(_commented(lines[-1], node_code(node, names)))
        value[node] = names[node]
    for out in kernel.outputs:
        body.append(f"    tl.store({names[out]}_ptr + offs, {value[out]}, mask=mask)")
    return n, body


def _commented(line, comment, width=44):
    return f"    {line:<{width}}  # {comment}"


def _numel(shape):
    total = 1
    for d in shape:
        total *= d
    return total


def _is_flat(view, shape):
    """The view reads element `offs` (plus a fixed offset): the same row-major order."""
    return view.shape == shape and view.strides == contiguous_strides(shape)


def _flat(view):
    return f"offs + {view.offset}" if view.offset else "offs"


def _compute(node, value, views, index, names, src):
    """The Triton lines computing `node` from the values already in registers."""
    op, name = node.op, names[node]
    args = [value.get(i) for i in node.inputs]
    if op in HELPERS:
        src.helper(HELPERS[op])
    if op in EXPRESSIONS:
        dtype = TL_DTYPE[node.attrs["dtype"]] if op == "cast" else TL_DTYPE[node.dtype]
        return [f"{name} = {EXPRESSIONS[op].format(*args, dtype=dtype)}"]
    if op == "iota":
        along = index[node.attrs["dim"]]        # "0" along a dimension of size 1
        if along == "0":
            return [f"{name} = tl.zeros((BLOCK,), {TL_DTYPE[node.dtype]})"]
        return [f"{name} = {along}.to({TL_DTYPE[node.dtype]})"]
    if op == "rand":
        # Philox's counter is the element's row-major index: the same numbers as the NumPy reference
        return [f"{name} = tl.rand({args[0]}, offs)"]
    if op == "pad":
        return _pad(node, views, index, names)
    if op == "cat":
        return _cat(node, views, index, names)
    raise BackendError(f"{op} reached the pointwise generator, which cannot compute it (a chainrule bug)", op=op)


def _lanes(pointer, where):
    """The pointers of a masked load, one per lane: broadcast to the block when every lane
    reads the same element."""
    if re.search(r"\bi\d|\boffs\b", where):
        return f"{pointer} + {where}"
    return f"tl.broadcast_to({pointer} + {where}, (BLOCK,))"


def _pad(node, views, index, names):
    """Output element i comes from x[(i - lo) / (interior + 1)] when that is a whole index
    inside x; otherwise it is zero."""
    x = node.inputs[0]
    lo, interior = node.attrs["lo"], node.attrs["interior"]
    conds, source_index = ["mask"], []
    for d, (size, low, gap) in enumerate(zip(x.shape, lo, interior)):
        i = f"({index[d]} - {low})" if low else index[d]
        if gap:
            conds.append(f"({i} % {gap + 1} == 0)")
            i = f"({i} // {gap + 1})"
        conds += [f"({i} >= 0)", f"({i} < {size})"]
        source_index.append(i)
    inside = " & ".join(conds)
    return [f"{names[node]} = tl.load({_lanes(names[x] + '_ptr', address(views[x], source_index))}, mask={inside}, "
            "other=0)"]


def _cat(node, views, index, names):
    """Each output element is loaded from the input whose range along `dim` holds it."""
    dim = node.attrs["dim"]
    lines, start = [], 0
    for k, x in enumerate(node.inputs):
        local = list(index)
        local[dim] = f"({index[dim]} - {start})" if start else index[dim]
        inside = f"({index[dim]} >= {start}) & ({index[dim]} < {start + x.shape[dim]})"
        load = f"tl.load({_lanes(names[x] + '_ptr', address(views[x], local))}, mask=mask & {inside}, other=0)"
        lines.append(f"{names[node]} = {load}" if k == 0 else
                     f"{names[node]} = tl.where({inside}, {load}, {names[node]})")
        start += x.shape[dim]
    return lines
