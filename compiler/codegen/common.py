"""What every kernel generator shares: the target, names, dtypes, index arithmetic, and the
header that ties a kernel to the graph nodes and the user's source lines it covers.

Shapes and strides are known when a graph is compiled, so they are written into the
kernel as numbers: `i1 = offs % 10` reads better than `i1 = offs % size_1`, and Triton
folds them. A kernel is therefore specialized to its shapes, like the graph it comes from.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ops.ir import SHORT_DTYPE, source_text
from ops.printer import node_code, node_comment

from ..lower import Literal, View

TL_DTYPE = {"float32": "tl.float32", "float64": "tl.float64", "int32": "tl.int32", "int64": "tl.int64",
            "bool": "tl.int1"}


@dataclass(frozen=True)
class Target:
    """Where kernels run. The kernel text does not depend on it (block sizes are launch
    parameters: codegen/blocks.py); the target says which device loads them, whether
    float32 products may use TF32 (`tl.dot`'s input_precision), and the memory plan's alignment."""

    device: str = "cpu"            # "cuda" or "cpu"
    interpret: bool = True         # Triton's interpreter (runtime/executors/kernel_cache.py)
    allow_tf32: bool = False       # tl.dot's input_precision for float32: "tf32" or "ieee"

    @property
    def key(self):
        return f"{self.device}-{'interpret' if self.interpret else 'compiled'}-{'tf32' if self.allow_tf32 else 'ieee'}"


# Names the generators use for their own variables. A graph input called `mask` or `rows`
# (its kernels name values after it: `mask`, `mask_ptr`, `mask_tile`) is renamed `mask_in`.
KERNEL_WORDS = {
    "acc", "batch", "best", "best_index", "better", "block_best", "block_index", "c", "chosen", "col", "col_mask",
    "cols", "e", "end", "grid", "h_ok", "in_h", "in_w", "inside", "k_mask", "k_start", "kh", "ks", "kw", "launch",
    "magnitude", "mask", "meta", "n", "negative", "o", "odd", "offs", "ok", "out_h", "out_mask", "out_w", "pid", "power",
    "row", "row_mask", "rows", "sigmoid", "start", "t", "tanh", "tile", "tiles_across", "tl", "total", "triton",
    "w_ok", "y_is_int", "BLOCK", "BLOCK_COLS", "BLOCK_K", "BLOCK_M", "BLOCK_N", "BLOCK_ROWS"}


def kernel_names(names):
    """The printed program's value names, made safe to use inside generated kernels."""
    def clashes(name):
        derived = {name, f"{name}_mask", f"{name}_tile", f"{name}_value", f"{name}_left", f"{name}_right"}
        return bool(derived & KERNEL_WORDS) or re.fullmatch(r"[irbcv]\d+|out_[hw]_.*|end_\d+", name) is not None

    return {node: f"{name}_in" if name.isidentifier() and clashes(name) else name for node, name in names.items()}


def literal_code(lit: Literal):
    """A scalar constant as Triton source."""
    value = lit.value
    if lit.dtype == "bool":
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        if math.isnan(value):
            return "float('nan')"
        if lit.dtype == "float32":
            return np.format_float_positional(np.float32(value), unique=True, trim="0")
        with np.errstate(over="ignore"):        # past float32's range is not float32 either
            exact_in_float32 = float(np.float32(value)) == value
        if lit.dtype == "float64" and not exact_in_float32:
            # Triton types a bare float literal float32: where no float64 tensor meets it
            # (`tl.where(mask, 0.6, 0)`, a stored constant) it would lose its last digits
            return f"tl.full([], {value!r}, tl.float64)"
        return repr(value)
    return repr(value)


def digits(shape, flat, var="i", only=None):
    """Statements that split a flat row-major index `flat` over `shape` into i0, i1, ...

    Returns (lines, names): lines are (dim, statement) pairs; names[d] is the variable
    holding dimension d's index (None for a dimension nobody needs, "0" for a size-1 one)."""
    lines, names = [], []
    inner = 1
    inners = []
    for size in reversed(shape):
        inners.append(inner)
        inner *= size
    inners.reverse()
    for d, (size, step) in enumerate(zip(shape, inners)):
        if only is not None and d not in only:
            names.append(None)
            continue
        if size == 1:
            names.append("0")
            continue
        expr = flat if step == 1 else f"({flat} // {step})"
        if d > 0:
            expr = f"{expr} % {size}"
        if expr == flat:                 # the only dimension that varies: the flat index itself
            names.append(flat)
            continue
        name = f"{var}{d}"
        lines.append((d, f"{name} = {expr}"))
        names.append(name)
    return lines, names


def address(view: View, index_names):
    """The element offset of view[index] as Triton source: offset + Σ index_d · stride_d."""
    terms = [str(view.offset)] if view.offset else []
    for name, stride, size in zip(index_names, view.strides, view.shape):
        if stride == 0 or size == 1 or name == "0":
            continue
        terms.append(name if stride == 1 else f"{name} * {stride}")
    return " + ".join(terms) or "0"


def dims_needed(view: View):
    """Dimensions whose index matters to this view (not broadcast, not of size 1)."""
    return {d for d, (stride, size) in enumerate(zip(view.strides, view.shape)) if stride != 0 and size != 1}


def describe(view, node_dtype):
    """A few words on how a kernel reads an input."""
    shape = ",".join(map(str, view.shape))
    base = view.base
    text = f"{SHORT_DTYPE[node_dtype]}[{shape}]"
    if view.is_contiguous and view.shape == base.shape:
        return text
    notes = []
    broadcast = [d for d, s in enumerate(view.strides) if s == 0 and view.shape[d] != 1]
    if broadcast:
        notes.append(f"broadcast along dims {tuple(broadcast)}")
    notes.append(f"a view of {base.name or 'a buffer'} {base.type_str} with strides {view.strides}"
                 + (f", offset {view.offset}" if view.offset else ""))
    return f"{text} ({'; '.join(notes)})"


class KernelSource:
    """Builds the text of one generated file: header, helpers, the @triton.jit kernel and
    its launch function."""

    def __init__(self, kernel, names, family_note=""):
        self.kernel = kernel
        self.names = names
        self.family_note = family_note
        self.helpers = []
        self.body = []
        self.launch = []

    def name_of(self, node):
        return self.names[node]

    def header(self):
        k = self.kernel
        lines = [f'"""{k.name}: {self.family_note or k.family}', "", "computes:"]
        quoted = set()
        for node in k.nodes:
            lines.append(f"    {node_code(node, self.names)}    # {node_comment(node)}")
            code = source_text(node.source)
            if code and node.source not in quoted:          # each line of the user's code once
                quoted.add(node.source)
                lines.append(f"        from {node.source}:  {code}")
        reads = [f"{self.names[n]} {describe(v, n.dtype)}" for n, v in k.inputs.items() if isinstance(v, View)]
        if reads:
            lines += ["", "reads:  " + "\n        ".join(reads)]
        lines += ["writes: " + "\n        ".join(f"{self.names[n]} {n.type_str}" for n in k.outputs), '"""']
        return lines

    def text(self):
        out = self.header() + ["import triton", "import triton.language as tl", ""]
        for helper in self.helpers:
            out += ["", *helper, ""]
        out += ["", *self.body, "", "", *self.launch]
        return "\n".join(out).rstrip() + "\n"

    def helper(self, lines):
        if lines not in self.helpers:
            self.helpers.append(lines)

    def pointer_args(self):
        """Kernel parameters: one pointer per input read from memory, then one per output."""
        ins = [self.names[n] for n, v in self.kernel.inputs.items() if isinstance(v, View)]
        outs = [self.names[n] for n in self.kernel.outputs]
        return ins, outs
