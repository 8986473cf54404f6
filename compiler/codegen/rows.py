"""Row kernels: reductions fused with the pointwise work before and after them.

softmax is max over a row, subtract, exp, sum over the row, divide. As separate kernels
that is five round trips through memory; here it is one program per block of rows that
loads each row once, keeps it in registers (the *persistent* form: a whole row fits in one
block), reduces it as often as needed and writes only what is used outside.

Values come in two kinds: *full* values have the iteration space's shape and live in
[BLOCK_ROWS, BLOCK_COLS] tiles; *row* values (a reduction's result, or anything computed
from results only) have one element per row and live in [BLOCK_ROWS, 1] tiles, which
Triton broadcasts against full tiles.
"""
from __future__ import annotations

from ..fusion import is_total
from ..lower import Literal, View
from ..printer import node_code
from .common import TL_DTYPE, KernelSource, address, digits, literal_code, next_pow2
from .pointwise import EXPRESSIONS, HELPERS, _commented


def row_shapes(shape, dims):
    """The two shapes a row value can have: with the reduced dims kept as 1, or dropped."""
    keepdim = tuple(1 if d in dims else n for d, n in enumerate(shape))
    dropped = tuple(n for d, n in enumerate(shape) if d not in dims)
    return keepdim, dropped


def generate(kernel, names, target):
    shape, dims = kernel.space
    kept = [d for d in range(len(shape)) if d not in dims]
    rows = _prod(shape[d] for d in kept)
    cols = _prod(shape[d] for d in dims)
    block_rows, block_cols = target.reduction_blocks(rows, cols)
    assert block_cols >= cols, "fusion only makes row kernels whose rows fit in one block"
    totals = [n for n in kernel.nodes if is_total(n, shape, dims)]
    if totals:                 # a sum over every row: one program holds them all
        block_rows = next_pow2(rows)
    reductions = [n for n in kernel.nodes if n.op in ("reduce_sum", "reduce_max")]
    src = KernelSource(kernel, names, family_note=f"{len(kernel.nodes)} nodes fused around "
                       f"{len(reductions)} reduction(s) over dims {tuple(dims)} of [{','.join(map(str, shape))}]: "
                       f"{rows} rows of {cols}, each row loaded once and kept in registers")
    keepdim, dropped = row_shapes(shape, dims)

    row_lines, row_index = digits([shape[d] for d in kept], "rows", var="r")
    col_lines, col_index = digits([shape[d] for d in dims], "cols", var="c")
    index = [None] * len(shape)
    for d, name in zip(kept, row_index):
        index[d] = name
    for d, name in zip(dims, col_index):
        index[d] = name

    ins, outs = src.pointer_args()
    params = ", ".join([f"{p}_ptr" for p in ins + outs] + ["BLOCK_ROWS: tl.constexpr", "BLOCK_COLS: tl.constexpr"])
    body = ["@triton.jit", f"def {kernel.name}({params}):",
            f"    # a program takes BLOCK_ROWS of the {rows} rows (dims {tuple(kept)}) and the whole of each row: "
            f"{cols} columns (dims {tuple(dims)})",
            f"    rows = tl.program_id(0) * BLOCK_ROWS + {target.arange('BLOCK_ROWS')}[:, None]",
            f"    cols = {target.arange('BLOCK_COLS')}[None, :]",
            f"    row_mask = rows < {rows}",
            f"    mask = row_mask & (cols < {cols})"]
    body += [f"    {line}" for _, line in row_lines + col_lines]

    # Each node computes in its own index space, mapped onto (rows, cols): a full node by every
    # digit, a row node (keepdim or not) by the row digits alone. An input is read the way its
    # reader broadcasts it (NumPy's right-aligned rule) in the reader's own index space.
    def reads_at(reader):
        """(shape, index) the reader reads its inputs at: a reduction reads whole rows, a
        total reads one value per row."""
        if reader in totals:
            return reader.inputs[0].shape, own_index(reader.inputs[0])
        if reader.op in ("reduce_sum", "reduce_max"):
            return shape, index
        if reader.op == "reshape":               # (rows,) <-> (rows, 1): read as it is
            return reader.inputs[0].shape, own_index(reader.inputs[0])
        return reader.shape, own_index(reader)

    def own_index(node):
        if node.shape == shape:
            return index
        if node.shape == ():
            return []
        if node.shape == keepdim:
            return [index[d] if d not in dims else "0" for d in range(len(shape))]
        return [index[d] for d in kept]

    value, loaded = {}, {}
    for reader in kernel.nodes:
        for node in reader.inputs:
            where = kernel.inputs.get(node)
            if where is None or node in value and not isinstance(where, View):
                continue
            if isinstance(where, Literal):
                value[node] = literal_code(where)
                continue
            at_shape, at_index = reads_at(reader)
            view = where.expand(at_shape) if where.shape != at_shape else where
            offsets = address(view, at_index)
            if offsets in loaded.get(node, {}):
                continue
            name = names[node] if node not in loaded else f"{names[node]}_{len(loaded[node])}"
            if at_shape == ():                             # read by a value of the whole kernel: one element
                body.append(f"    {name} = tl.load({names[node]}_ptr + {offsets})")
            elif _anchored(offsets, "cols") != offsets:    # the same along each row: a row value
                body.append(f"    {name} = tl.load({names[node]}_ptr + {_anchored(offsets, 'rows')}, mask=row_mask)")
            else:
                body.append(f"    {name} = tl.load({names[node]}_ptr + {_anchored(offsets, 'rows', 'cols')}, "
                            "mask=mask, other=0)")
            loaded.setdefault(node, {})[offsets] = name

    def read(reader, node):
        if node in value:
            return value[node]
        at_shape, at_index = reads_at(reader)
        view = kernel.inputs[node]
        view = view.expand(at_shape) if view.shape != at_shape else view
        return loaded[node][address(view, at_index)]

    for node in kernel.nodes:
        args = [read(node, i) for i in node.inputs]
        name = names[node]
        if node in totals:       # over the rows this (single) program holds: a [1, 1] tile
            fill, reduce = ("0", "tl.sum") if node.op == "reduce_sum" else ("float('-inf')", "tl.max")
            line = f"{name} = {reduce}(tl.where(row_mask, {args[0]}, {fill}), axis=0)[None, :]"
        elif node.op == "reduce_sum":
            line = f"{name} = tl.sum(tl.where(mask, {args[0]}, 0), axis=1)[:, None]"
        elif node.op == "reduce_max":
            line = f"{name} = tl.max(tl.where(mask, {args[0]}, float('-inf')), axis=1)[:, None]"
        elif node.op in ("reshape", "expand"):
            line = f"{name} = {args[0]}"
        elif node.op == "iota":
            line = f"{name} = ({index[node.attrs['dim']]} + tl.zeros((BLOCK_ROWS, BLOCK_COLS), tl.int32))" \
                   f".to({TL_DTYPE[node.dtype]})"
        else:
            if node.op in HELPERS:
                src.helper(HELPERS[node.op])
            dtype = TL_DTYPE[node.attrs["dtype"]] if node.op == "cast" else TL_DTYPE[node.dtype]
            line = f"{name} = {EXPRESSIONS[node.op].format(*args, dtype=dtype)}"
        body.append(_commented(line, node_code(node, names)))
        value[node] = name

    for out in kernel.outputs:
        if totals and out.shape == () and dropped != ():           # a value of the whole kernel
            body.append(f"    tl.store({names[out]}_ptr + tl.zeros((1, 1), tl.int32), {names[out]})")
        elif out.shape == shape and out.shape not in (keepdim, dropped):
            body.append(f"    tl.store({names[out]}_ptr + {address(View.of(out), index)}, {names[out]}, mask=mask)")
        else:
            body.append(f"    tl.store({names[out]}_ptr + rows, {names[out]}, mask=row_mask)")
    src.body = body
    args = ", ".join(ins + outs)
    src.launch = [f"def launch({args}, BLOCK_ROWS={block_rows}, BLOCK_COLS={block_cols}):",
                  f"    grid = (triton.cdiv({rows}, BLOCK_ROWS),)",
                  f"    {kernel.name}[grid]({args}, BLOCK_ROWS=BLOCK_ROWS, BLOCK_COLS=BLOCK_COLS)"]
    return src.text()


def _anchored(where, *axes):
    """A load needs one address per lane of its tile: add `0 * rows` (or cols) where the
    address does not vary along that axis."""
    missing = [a for a in axes if a not in where and not any(f"{a[0]}{k}" in where for k in range(8))]
    return where if not missing else f"{where} + 0 * ({' + '.join(missing)})"


def _prod(sizes):
    total = 1
    for s in sizes:
        total *= s
    return total
