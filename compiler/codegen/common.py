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


def next_pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class Target:
    """Where kernels run, and the block sizes that suit it.

    On a GPU a program instance is cheap and blocks of ~1K elements keep the machine busy.
    Under Triton's interpreter every block operation is a NumPy call over the whole block
    plus ~0.1 ms of Python, whatever the block's size, and the programs of a launch run one
    after the other: few programs with large blocks. Past ~2^16 elements the NumPy work
    outweighs the Python (a fused pointwise kernel over 2^19 elements: 48 ms in blocks of
    2^14, 25 ms in blocks of 2^16, 32 ms in blocks of 2^17)."""

    device: str = "cpu"            # "cuda" or "cpu"
    interpret: bool = True
    allow_tf32: bool = False       # tl.dot's input_precision for float32: "tf32" or "ieee"

    INTERPRET_BLOCK = 1 << 16      # under the interpreter: elements in a pointwise, window or row kernel's block

    @property
    def key(self):
        return f"{self.device}-{'interpret' if self.interpret else 'compiled'}-{'tf32' if self.allow_tf32 else 'ieee'}"

    def pointwise_block(self, n):
        return min(next_pow2(n), 1024 if not self.interpret else self.INTERPRET_BLOCK)

    def reduction_blocks(self, rows, cols):
        """(rows per program, columns per step); columns cover the whole row when it fits."""
        if self.interpret:
            cols_block = min(next_pow2(cols), 16384)      # a longer row is walked in steps (the looped form)
            return max(1, min(next_pow2(rows), self.INTERPRET_BLOCK // cols_block)), cols_block
        cols_block = min(next_pow2(cols), 4096)
        return max(1, min(next_pow2(rows), 4096 // cols_block, 64)), cols_block

    def arange(self, block):
        """The lane numbers 0 .. block-1 of a block, as source. Under the interpreter they are
        int64: it checks every int32 `+`, `-` and `*` for overflow (widening both operands and
        comparing the result: several more NumPy passes over the block), and int64 arithmetic it
        does not check. Index arithmetic derived from the lanes inherits their type."""
        return f"tl.arange(0, {block}).to(tl.int64)" if self.interpret else f"tl.arange(0, {block})"

    def tile(self, size, cpu_max, gpu=64):
        """A tile edge for the GEMM-like kernels (at least 16: tl.dot needs it)."""
        return max(16, min(next_pow2(size), cpu_max if self.interpret else gpu))


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


def tuned_launch(kernel_name, args, configs, grid):
    """The CONFIGS list and the launch() of a kernel whose block sizes are chosen by
    measurement (runtime/executors/autotune.py times each config on the device at compile time, keeps
    the fastest and caches the choice). `configs`: dicts of launch parameters, the first the
    code generator's own pick, which launch() takes by default; `grid`: the launch grid as
    source, in terms of those parameters. One config: nothing to choose, no CONFIGS."""
    keys = list(configs[0])
    lines = []
    if len(configs) > 1:
        lines += ["# the block sizes to choose from: runtime/executors/autotune.py times each on the device and keeps",
                  "# the fastest; launch() on its own takes the first, the code generator's pick", "CONFIGS = ["]
        lines += ["    {" + ", ".join(f'"{k}": {c[k]}' for k in keys) + "}," for c in configs]
        lines += ["]", "", ""]
    return lines + [f"def launch({args}, " + ", ".join(f"{k}={configs[0][k]}" for k in keys) + "):",
                    f"    grid = {grid}",
                    f"    {kernel_name}[grid]({args}, " + ", ".join(f"{k}={k}" for k in keys) + ")"]


def distinct_configs(configs):
    """Configs whose block sizes differ (the first of each: the others would time the same)."""
    kept = []
    for config in configs:
        if all(any(config[k] != other[k] for k in config if k.startswith("BLOCK")) for other in kept):
            kept.append(config)
    return kept


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
