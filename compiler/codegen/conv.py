"""Convolution kernels: conv2d and its two gradients, each an implicit GEMM.

A convolution is a matrix product in disguise. Unroll every window of the input into a
row of a matrix A (the "im2col" matrix) and the weight into a matrix B, and the output is
A @ B. The three kernels are the same GEMM, with different roles for the three tensors
(x: input [N, C, H, W], w: weight [O, C, KH, KW], g: output cotangent [N, O, OH, OW]):

    primitive             rows m              columns           reduction k          A[m, k]   B[k, col]
    conv2d(x, w)          (n, out_h, out_w)   o                 (c, kh, kw)          x         w
    conv2d_grad_input     (n, in_h, in_w)     c                 (o, kh, kw)          g         w
    conv2d_grad_weight    o                   (c, kh, kw)       (n, out_h, out_w)    g         x

Tap (kh, kw) of the window at output pixel (out_h, out_w) sits on input pixel
    in_h = out_h·stride - padding + kh·dilation        (and the same for the width).
conv2d and conv2d_grad_weight read x there (zero when it falls in the padding);
conv2d_grad_input runs the relation backwards, out_h = (in_h + padding - kh·dilation) / stride,
and reads g only where that is a whole number inside the output: each dx element gathers
its own sum, so no two programs write the same element (no atomics).

"Implicit": A is never built in memory. Each program owns a BLOCK_M x BLOCK_N tile of
the result and walks the reduction BLOCK_K at a time, splitting each flat index (row,
column, k) into its digits and gathering the tiles of A and B from the tensors with that
index arithmetic (every operand may be a strided view: its strides are in the addresses).

A fused kernel then applies its epilogue (codegen/epilogue.py: bias add, activation, the
relu mask of the backward, ...) to the accumulator tile, at the same output positions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..lower import View
from . import blocks
from .common import TL_DTYPE, KernelSource, address
from .epilogue import Epilogue, Rider

# Under the interpreter: the elements of a conv kernel's largest tile (A's, B's or the
# output's). Measured over the zoo ResNet's convs: ~10% faster than 2^16 or 2^18, 1.5x
# faster than 2^15.
INTERPRET_TILE = 1 << 17

# GPU tiles (BLOCK_M, BLOCK_N, BLOCK_K, num_warps) for the autotuner (runtime/executors/autotune.py)
GPU_CONFIGS = [(64, 64, 32, 4), (128, 64, 32, 4), (64, 128, 32, 4), (32, 32, 32, 2), (128, 128, 32, 8)]

# index of a row digit in a [BLOCK_M, ...] tile, of a column digit in a [..., BLOCK_N] tile;
# a reduction digit is a column of A's tile and a row of B's
ROW, COL = "[:, None]", "[None, :]"


@dataclass
class Operand:
    """How to gather one tile of A or B: the tensor, its index along each of its dims (in
    terms of the GEMM's digits), the helper indices computed first, and the conditions
    under which the element exists (outside them it reads as zero)."""

    node: object
    index: list
    math: str                                       # a comment: which element A[m, k] / B[k, col] is
    lines: list = field(default_factory=list)       # (name, expression)
    inside: list = field(default_factory=list)      # extra mask conditions


@dataclass
class Gemm:
    """out[row, col] = Σ_k A[row, k] · B[k, col], rows/columns/reduction each a list of
    (digit name, size), row-major."""

    rows: list
    cols: list
    reduction: list
    a: Operand
    b: Operand
    out_index: list                                 # the output element each (row, col) is
    out_math: str                                   # the same, in words: "n, o, out_h, out_w"


def generate(kernel, names, target):
    node = kernel.nodes[0]                  # the convolution; any nodes after it are its epilogue
    gemm = BUILDERS[node.op](node)
    return _emit(kernel, names, target, gemm)


# -- the three GEMMs ---------------------------------------------------------------------------

class Digits:
    """The digit names of one GEMM and their sizes: `at(name, axis)` is the index of a digit
    broadcast along a tile's rows (ROW) or columns (COL), or "0" for a dimension of size 1
    (a digit that is always 0 is never computed)."""

    def __init__(self, *groups):
        self.size = {name: size for group in groups for name, size in group}

    def at(self, name, axis):
        return "0" if self.size[name] == 1 else name + axis

    def term(self, name, axis):
        return self.at(name, axis), self.size[name]


def _conv2d(node):
    """y = conv2d(x, w): rows are output pixels, columns output channels, the reduction runs
    over one window (c, kh, kw). A is x under the window, B is the weight."""
    x, w = node.inputs
    (_, _, height, width), (out_c, in_c, kh, kw), (n, _, out_h, out_w) = x.shape, w.shape, node.shape
    rows = [("n", n), ("out_h", out_h), ("out_w", out_w)]
    red = [("c", in_c), ("kh", kh), ("kw", kw)]
    cols = [("o", out_c)]
    d = Digits(rows, cols, red)
    a = _window_read(x, [d.at("n", ROW), d.at("c", COL)], [d.term("out_h", ROW), d.term("out_w", ROW)],
                     [d.term("kh", COL), d.term("kw", COL)], (height, width), node.attrs, "A[m, k]")
    b = Operand(w, [d.at("o", COL), d.at("c", ROW), d.at("kh", ROW), d.at("kw", ROW)], "B[k, o] = w[o, c, kh, kw]")
    return Gemm(rows, cols, red, a, b, [d.at("n", ROW), d.at("o", COL), d.at("out_h", ROW), d.at("out_w", ROW)],
                "n, o, out_h, out_w")


def _conv2d_grad_input(node):
    """dx = conv2d_grad_input(g, w): rows are input pixels, columns input channels, the
    reduction runs over (o, kh, kw). A is g at the output pixel whose tap (kh, kw) lands on
    the row's input pixel, B is the weight."""
    g, w = node.inputs
    (n, in_c, height, width), (out_c, _, kh, kw), (_, _, out_h, out_w) = node.shape, w.shape, g.shape
    rows = [("n", n), ("in_h", height), ("in_w", width)]
    red = [("o", out_c), ("kh", kh), ("kw", kw)]
    cols = [("c", in_c)]
    d = Digits(rows, cols, red)
    a = Operand(g, [d.at("n", ROW), d.at("o", COL)],
                "A[m, k] = g[n, o, out_h, out_w], the output pixel whose tap (kh, kw) sits on (in_h, in_w):\n"
                "out_h·stride = in_h + padding - kh·dilation (the same for out_w); 0 unless whole and inside g")
    for axis, size in (0, out_h), (1, out_w):
        hw = "hw"[axis]
        a.index.append(_solve_window(a, d.term(f"in_{hw}", ROW), d.term(f"k{hw}", COL), size, node.attrs, axis))
    b = Operand(w, [d.at("o", ROW), d.at("c", COL), d.at("kh", ROW), d.at("kw", ROW)], "B[k, c] = w[o, c, kh, kw]")
    return Gemm(rows, cols, red, a, b, [d.at("n", ROW), d.at("c", COL), d.at("in_h", ROW), d.at("in_w", ROW)],
                "n, c, in_h, in_w")


def _conv2d_grad_weight(node):
    """dw = conv2d_grad_weight(x, g): rows are output channels, columns the weight's
    (c, kh, kw), the reduction runs over every output pixel (n, out_h, out_w). A is g, B is
    x under the window."""
    x, g = node.inputs
    (_, _, height, width), (n, out_c, out_h, out_w), (_, in_c, kh, kw) = x.shape, g.shape, node.shape
    rows = [("o", out_c)]
    red = [("n", n), ("out_h", out_h), ("out_w", out_w)]
    cols = [("c", in_c), ("kh", kh), ("kw", kw)]
    d = Digits(rows, cols, red)
    a = Operand(g, [d.at("n", COL), d.at("o", ROW), d.at("out_h", COL), d.at("out_w", COL)],
                "A[o, k] = g[n, o, out_h, out_w]")
    b = _window_read(x, [d.at("n", ROW), d.at("c", COL)], [d.term("out_h", ROW), d.term("out_w", ROW)],
                     [d.term("kh", COL), d.term("kw", COL)], (height, width), node.attrs, "B[k, col]")
    return Gemm(rows, cols, red, a, b, [d.at("o", ROW), d.at("c", COL), d.at("kh", COL), d.at("kw", COL)],
                "o, c, kh, kw")


BUILDERS = {"conv2d": _conv2d, "conv2d_grad_input": _conv2d_grad_input, "conv2d_grad_weight": _conv2d_grad_weight}


# -- the window arithmetic the GEMMs share ------------------------------------------------------

def _window_read(x, batch_channel, out, taps, image, attrs, what):
    """x[n, c, in_h, in_w] under tap (kh, kw) of the window at (out_h, out_w); zero in the
    padding. `out` and `taps` are (index, size) pairs for the two spatial axes."""
    op = Operand(x, list(batch_channel), f"{what} = x[n, c, in_h, in_w] under tap (kh, kw) of the window at "
                                         "(out_h, out_w):\nin_h = out_h·stride - padding + kh·dilation (the same "
                                         "for in_w); 0 in the padding")
    for axis, hw in enumerate("hw"):
        s, p, d = (attrs[a][axis] for a in ("stride", "padding", "dilation"))
        pixel = Linear([(*out[axis], s), (*taps[axis], d)], -p)
        index = _define(op, f"in_{hw}", pixel)
        op.inside += _in_range(index, pixel, image[axis])
        op.index.append(index)
    return op


def _solve_window(op, pixel, tap, out_size, attrs, axis):
    """The output index whose window puts `tap` (index, size) on input `pixel` (index, size):
    out = (pixel + padding - tap·dilation) / stride, read only when whole and inside
    [0, out_size). Returns the index expression."""
    hw = "hw"[axis]
    s, p, d = (attrs[a][axis] for a in ("stride", "padding", "dilation"))
    shifted = Linear([(*pixel, 1), (*tap, -d)], p)           # = out·stride
    if s == 1:
        index = _define(op, f"out_{hw}", shifted)
        op.inside += _in_range(index, shifted, out_size)
        return index
    if shifted.is_constant:
        whole = shifted.low >= 0 and shifted.low % s == 0 and shifted.low // s < out_size
        op.inside += [] if whole else ["False"]
        return str(shifted.low // s)
    scaled = _define(op, f"out_{hw}_times_{s}", shifted)
    op.inside += [f"({scaled} >= 0)"] if shifted.low < 0 else []
    op.inside.append(f"({scaled} % {s} == 0)")
    op.lines.append((f"out_{hw}", f"{scaled} // {s}"))
    op.inside += [f"(out_{hw} < {out_size})"] if shifted.high // s >= out_size else []
    return f"out_{hw}"


@dataclass
class Linear:
    """Σ index·coefficient + constant over indices of known sizes (index "0" for a size-1
    dimension): its source, and the range it spans, which decides what needs a mask."""

    terms: list                                     # (index, size, coefficient)
    constant: int

    @property
    def varying(self):
        return [(index, coef) for index, size, coef in self.terms if index != "0" and coef != 0]

    @property
    def is_constant(self):
        return not self.varying

    @property
    def low(self):
        return self.constant + sum(min(0, coef * (size - 1)) for _, size, coef in self.terms)

    @property
    def high(self):
        return self.constant + sum(max(0, coef * (size - 1)) for _, size, coef in self.terms)

    def source(self):
        parts = []
        for index, coef in self.varying:
            term = index if abs(coef) == 1 else f"{index} * {abs(coef)}"
            parts.append(("- " if coef < 0 else "+ ") + term if parts else ("-" if coef < 0 else "") + term)
        if self.constant:
            parts.append(f"{'+' if self.constant > 0 else '-'} {abs(self.constant)}")
        return " ".join(parts)


def _define(op, name, value):
    """The index expression for `value`: a constant or a lone index goes straight into the
    address; anything else is computed first into the variable `name`."""
    if value.is_constant:
        return str(value.constant)
    (first, coef), *more = value.varying
    if coef == 1 and not more and not value.constant:
        return first
    op.lines.append((name, value.source()))
    return name


def _in_range(index, value, size):
    """Mask conditions for 0 <= index < size, only for the bounds the value can cross."""
    if value.is_constant:
        return [] if 0 <= value.constant < size else ["False"]
    return ([f"({index} >= 0)"] if value.low < 0 else []) + ([f"({index} < {size})"] if value.high >= size else [])


# -- writing the kernel -------------------------------------------------------------------------

def _emit(kernel, names, target, gemm):
    node = kernel.nodes[0]
    acc_dtype = TL_DTYPE[node.dtype]
    m, n, k = _numel(gemm.rows), _numel(gemm.cols), _numel(gemm.reduction)
    row = _flat_name(gemm.rows, "rows")
    col = _flat_name(gemm.cols, "cols")
    ks = _flat_name(gemm.reduction, "ks")
    a_tile = f"{names[gemm.a.node]}_tile"
    b_tile = f"{names[gemm.b.node]}_tile" + ("_b" if gemm.b.node is gemm.a.node else "")
    a_lines, a_load = _load(gemm.a, kernel.inputs, names, a_tile, f"row_mask{ROW} & k_mask{COL}", acc_dtype,
                            "(BLOCK_M, BLOCK_K)")
    b_lines, b_load = _load(gemm.b, kernel.inputs, names, b_tile, f"k_mask{ROW} & col_mask{COL}", acc_dtype,
                            "(BLOCK_K, BLOCK_N)")
    out_address = address(View.of(node), gemm.out_index)
    where = _pointer(f"{names[node]}_ptr", out_address, {}, "(BLOCK_M, BLOCK_N)")
    store = f"tl.store({where}, acc, mask=out_mask)"
    epilogue = Epilogue(kernel, names)

    attrs = node.attrs
    src = KernelSource(kernel, names, family_note=f"{node.op} as an implicit GEMM [{m} x {k}] @ [{k} x {n}]; "
                                                 f"stride {attrs['stride']}, padding {attrs['padding']}, "
                                                 f"dilation {attrs['dilation']}"
                                                 + (f"; {epilogue.note()}" if epilogue else "")
                                                 + epilogue.rider_note())
    # conv2d_grad_weight's bias gradient: a sum of A (g) along k, one value per row (channel o)
    riders = [Rider(r, names, a_tile, 1, "(BLOCK_M,)", "") for r in epilogue.riders]
    if epilogue:              # after the k loop: the epilogue reads and writes at the output positions
        def tile_pointers(base, offset):
            return _pointer(base, offset, {}, "(BLOCK_M, BLOCK_N)")

        after = epilogue.lines(src, gemm.out_index, tile_pointers, "out_mask", out_address, out_address,
                               "(BLOCK_M, BLOCK_N)")
    else:
        after = [f"    {store}"] if node in kernel.outputs else []
    after += [line for rider in riders for line in rider.store(row, "row_mask", "tl.program_id(1) == 0")]
    code = a_lines + b_lines + [a_load, b_load] + after
    ins, outs = src.pointer_args()
    precision = "tf32" if target.allow_tf32 and node.dtype == "float32" else "ieee"
    out = names[node]
    body = ["@triton.jit",
        f"def {kernel.name}({', '.join(f'{p}_ptr' for p in ins + outs)}, "
        "BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):",
        f"    # the conv GEMM: {out}[m, col] = Σ_k A[m, k] · B[k, col], with",
        f"    #   rows m = {_group(gemm.rows)}, columns col = {_group(gemm.cols)}, "
        f"reduction k = {_group(gemm.reduction)}",
        "    # this program computes a BLOCK_M x BLOCK_N tile of it",
        f"    {row} = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)",
        f"    row_mask = {row} < {m}"]
    body += [f"    {line}" for line in _split(row, gemm.rows, code)]
    body += [f"    {col} = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)",
             f"    col_mask = {col} < {n}"]
    body += [f"    {line}" for line in _split(col, gemm.cols, code)]
    body += [f"    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype={acc_dtype})"]
    body += [line for rider in riders for line in rider.start()]
    body += [
             "    # walk the reduction BLOCK_K at a time",
             f"    for k_start in range(0, {k}, BLOCK_K):",
             f"        {ks} = k_start + tl.arange(0, BLOCK_K)",
             f"        k_mask = {ks} < {k}"]
    body += [f"        {line}" for line in _split(ks, gemm.reduction, code)]
    body += _comment(gemm.a.math, "        ") + [f"        {line}" for line in a_lines + [a_load]]
    body += _comment(gemm.b.math, "        ") + [f"        {line}" for line in b_lines + [b_load]]
    out_dtype = ", out_dtype=tl.float64" if acc_dtype == "tl.float64" else ""    # tl.dot's default is float32
    body += [f'        acc = tl.dot({a_tile}, {b_tile}, acc, input_precision="{precision}"{out_dtype})']
    body += [line for rider in riders for line in rider.step()]
    body += [
             f"    # {out}[{gemm.out_math}] = acc[m, col]",
             f"    out_mask = row_mask{ROW} & col_mask{COL}"]
    body += after
    src.body = body
    src.launch = _launch(kernel, ins + outs, m, n, k)
    return src.text()


def _comment(text, indent):
    first, *more = text.split("\n")
    return [f"{indent}# {first}"] + [f"{indent}#   {line}" for line in more]


def _load(op, views, names, tile, bounds, acc_dtype, shape):
    """The statements computing an operand's helper indices and mask, and the masked load of
    its tile (zero where the element is outside the GEMM or outside the image)."""
    mask = tile.replace("_tile", "_mask")
    where = _pointer(f"{names[op.node]}_ptr", address(views[op.node], op.index), dict(op.lines), shape)
    conditions = " & ".join([bounds] + op.inside)
    helpers = []                  # the helper indices the address and the mask read (a broadcast dim reads none)
    for name, expr in reversed(op.lines):
        if any(re.search(rf"\b{name}\b", text) for text in [where, conditions] + [e for _, e in helpers]):
            helpers.insert(0, (name, expr))
    empty = "    # False: along one axis every element lies outside the tensor" if "False" in op.inside else ""
    lines = [f"{name} = {expr}" for name, expr in helpers] + [f"{mask} = {conditions}{empty}"]
    cast = f".to({acc_dtype})" if TL_DTYPE[op.node.dtype] != acc_dtype else ""
    return lines, f"{tile} = tl.load({where}, mask={mask}, other=0){cast}"


def _pointer(base, offset, helpers, shape):
    """base + offset, broadcast to the whole tile when the offset does not vary along both of
    its axes (a broadcast operand, or dimensions of size 1)."""
    if _axes(offset, helpers) == {ROW, COL}:
        return f"{base} + {offset}"
    return f"tl.broadcast_to({base} + {offset}, {shape})"


def _axes(text, helpers):
    """The tile axes (ROW, COL) an index expression varies along."""
    axes = {axis for axis in (ROW, COL) if axis in text}
    for name, expr in helpers.items():
        if re.search(rf"\b{name}\b", text):
            axes |= _axes(expr, helpers)
    return axes


def _split(flat, digits, code):
    """Statements splitting the flat index `flat` into its digits (row-major), leaving out
    digits the kernel never reads (a dimension of size 1 has the index 0). Along an empty axis
    (a size 0: an empty batch) the mask keeps no index, so the digits only need to be valid
    arithmetic: sizes count as at least 1."""
    lines, step, outermost = [], _numel((name, max(size, 1)) for name, size in digits), True
    for name, size in digits:
        if size == 1:
            continue
        step //= max(size, 1)
        wrap, outermost = not outermost, False        # the outermost digit needs no "% size"
        if name == flat or not any(re.search(rf"\b{name}\b", text) for text in code):
            continue
        expr = flat if step == 1 else f"{flat} // {step}"
        if wrap and size > 1:
            expr = f"{expr} % {size}" if step == 1 else f"({expr}) % {size}"
        lines.append(f"{name} = {expr}")
    return lines


def _flat_name(digits, default):
    """An axis with one digit (or one of size above 1) is indexed by that digit itself."""
    varying = [name for name, size in digits if size > 1]
    return varying[0] if len(varying) == 1 else digits[0][0] if len(digits) == 1 else default


def _group(digits):
    names = ", ".join(name for name, _ in digits)
    return f"({names})" if len(digits) > 1 else names


def _numel(digits):
    total = 1
    for _, size in digits:
        total *= size
    return total


def _launch(kernel, args, m, n, k):
    """The block sizes to try, the first used untuned. On a GPU: tiles the tensor cores like, cut
    to the shapes.
    The interpreter runs the programs one after the other and pays ~0.1 ms of Python for each
    block operation, plus NumPy's time over the block: one program where it fits, and tiles
    of about INTERPRET_TILE elements (the others try half and twice that). The output's
    columns come first (a whole row of the output when it fits), then its rows; the reduction
    walks in steps of what is left. The zoo ResNet's 16 -> 16 channel 3x3 conv over 64 8x8
    images is one program of 4096 x 16 outputs in 5 steps of 32 (4096 x 32 tiles of A): 3x
    faster than 16 programs of 256 x 16 outputs in one step of 256 (its reduction is 144
    long: 44% padding)."""
    gpu = [{"BLOCK_M": blocks.tile(m, bm), "BLOCK_N": blocks.tile(n, bn), "BLOCK_K": blocks.tile(k, bk),
            "num_warps": warps, "num_stages": 3} for bm, bn, bk, warps in GPU_CONFIGS]
    interpreter = []
    for budget in (INTERPRET_TILE, INTERPRET_TILE // 2, INTERPRET_TILE * 2):
        bn = blocks.tile(n, 256)
        bm = blocks.tile(m, budget // bn)
        interpreter.append({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": blocks.tile(k, budget // max(bm, bn))})
    grid = f"(triton.cdiv({m}, BLOCK_M), triton.cdiv({n}, BLOCK_N))"
    return blocks.launch_lines(kernel.name, ", ".join(args), blocks.distinct(gpu), blocks.distinct(interpreter), grid)
