"""Reduction kernels: reduce_sum, reduce_max and argmax over any set of dimensions.

The input is seen as a matrix: a *row* for every position of the kept dimensions and a
*column* for every position of the reduced ones. A program takes BLOCK_ROWS rows. When a
whole row fits in one block (the persistent form) it is loaded once and reduced; otherwise
the program walks along the row BLOCK_COLS columns at a time (the looped form), keeping a
running sum, max, or (max, index) pair.
"""
from __future__ import annotations

from ops.families import REDUCTIONS

from ..lower import Literal
from . import blocks
from .common import TL_DTYPE, KernelSource, address, digits, literal_code


def generate(kernel, names, target):
    node = kernel.root
    x = node.inputs[0]
    view = kernel.inputs[x]
    dims = node.attrs["dims"] if "dims" in node.attrs else (node.attrs["dim"],)
    kept = [d for d in range(len(x.shape)) if d not in dims]
    rows = _prod(x.shape[d] for d in kept)
    cols = _prod(x.shape[d] for d in dims)
    persistent = blocks.fits_one_block(cols)
    op = node.op
    form = "persistent: a whole row in one block" if persistent else "looped: BLOCK_COLS columns at a time"
    src = KernelSource(kernel, names, family_note=f"{op} over dims {tuple(dims)} of {x.type_str}; "
                                                   f"{rows} rows of {cols}, {form}")
    xn, out = names[x], names[node]
    acc_dtype = TL_DTYPE[node.dtype] if op == "reduce_sum" else TL_DTYPE[x.dtype]
    if op == "reduce_sum" and x.dtype == "bool":
        acc_dtype = "tl.int64"

    row_lines, row_index = digits([x.shape[d] for d in kept], "rows", var="r")
    col_lines, col_index = digits([x.shape[d] for d in dims], "cols", var="c")
    index = [None] * len(x.shape)
    for d, name in zip(kept, row_index):
        index[d] = name
    for d, name in zip(dims, col_index):
        index[d] = name
    pointers = f"{xn}_ptr + {address(view, index)}"
    # The load needs a pointer for every (row, column) of the block, even where the view
    # reads the same memory along rows or columns (a broadcast input): say so explicitly.
    where = address(view, index)
    if not all(any(n and n != "0" and n in where for n in names_) for names_ in (row_index, col_index)):
        pointers = f"tl.broadcast_to({pointers}, (BLOCK_ROWS, BLOCK_COLS))"
    reduction = REDUCTIONS[op]
    if reduction.helper:
        src.helper(list(reduction.helper))
    other = literal_code(Literal(reduction.identity_of(x.dtype), x.dtype))     # what a masked lane adds

    body = ["@triton.jit",
            f"def {kernel.name}({xn}_ptr, {out}_ptr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):",
            f"    # rows: the {rows} positions of the kept dims {tuple(kept)}; columns: the {cols} positions "
            f"of the reduced dims {tuple(dims)}",
            "    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]",
            f"    row_mask = rows < {rows}"]
    body += [f"    {line}" for _, line in row_lines]
    load = f"tl.load({pointers}, mask=mask, other={other})"
    if op == "reduce_sum" and x.dtype == "bool":
        load += ".to(tl.int64)"
    step = [f"cols = {'start + ' if not persistent else ''}tl.arange(0, BLOCK_COLS)[None, :]",
            f"mask = row_mask & (cols < {cols})"] + [line for _, line in col_lines] + [f"{xn} = {load}"]
    if persistent:
        body += [f"    {line}" for line in step]
        body += [f"    {line}" for line in _reduce_block(reduction, out, acc_dtype, x.dtype, xn)]
    else:
        body += [f"    {line}" for line in _init(op, acc_dtype, other)]
        body.append(f"    for start in range(0, {cols}, BLOCK_COLS):")
        body += [f"        {line}" for line in step]
        body += [f"        {line}" for line in _accumulate(reduction, acc_dtype, x.dtype, xn)]
        body += [f"    {line}" for line in _finish(op, out)]
    body.append(f"    tl.store({out}_ptr + rows, {out}[:, None], mask=row_mask)")
    src.body = body
    src.launch = blocks.launch_lines(kernel.name, f"{xn}, {out}", *blocks.rows(rows, cols, looped=not persistent),
                                     f"(triton.cdiv({rows}, BLOCK_ROWS),)")
    return src.text()


def _prod(sizes):
    total = 1
    for s in sizes:
        total *= s
    return total


def _reduce_block(reduction, out, acc_dtype, x_dtype, x):
    if reduction.name == "argmax":
        return [f"_, {out} = {reduction.triton}({x}, axis=1)",
                f"{out} = {out}.to(tl.int64)    # the first max (or NaN), as torch"]
    return [f"{out} = {reduction.triton}({_as(acc_dtype, x_dtype, x)}, axis=1)"]


def _as(acc_dtype, x_dtype, x):
    """x in the accumulator's dtype (a cast only when they differ)."""
    return x if acc_dtype == TL_DTYPE[x_dtype] else f"{x}.to({acc_dtype})"


def _init(op, acc_dtype, lowest):
    if op == "reduce_sum":
        return [f"total = tl.zeros((BLOCK_ROWS,), {acc_dtype})"]
    if op == "reduce_max":
        return [f"best = tl.full((BLOCK_ROWS,), {lowest}, {acc_dtype})"]
    return [f"best = tl.full((BLOCK_ROWS,), {lowest}, {acc_dtype})",
            "best_index = tl.zeros((BLOCK_ROWS,), tl.int64)"]


def _accumulate(reduction, acc_dtype, x_dtype, x):
    if reduction.accumulate is not None:
        acc = "total" if reduction.name == "reduce_sum" else "best"
        return [reduction.accumulate.format(acc=acc, block=f"{reduction.triton}({_as(acc_dtype, x_dtype, x)}, axis=1)")]
    return [f"block_best, block_index = {reduction.triton}({x}, axis=1)",
            "block_index = start + block_index.to(tl.int64)",
            "# strictly: an earlier max wins a tie; a NaN beats any number, and the first NaN stays",
            "better = (block_best > best) | ((block_best != block_best) & (best == best))",
            "best_index = tl.where(better, block_index, best_index)",
            "best = tl.where(better, block_best, best)"]


def _finish(op, out):
    return [f"{out} = {'total' if op == 'reduce_sum' else 'best' if op == 'reduce_max' else 'best_index'}"]
