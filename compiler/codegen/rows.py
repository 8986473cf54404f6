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
from ops.printer import node_code
from .common import TL_DTYPE, KernelSource, address, digits, literal_code, next_pow2
from .pointwise import EXPRESSIONS, HELPERS, _commented


def row_shapes(shape, dims):
    """The two shapes a row value can have: with the reduced dims kept as 1, or dropped."""
    keepdim = tuple(1 if d in dims else n for d, n in enumerate(shape))
    dropped = tuple(n for d, n in enumerate(shape) if d not in dims)
    return keepdim, dropped


def row_passes(kernel):
    """The looped form's plan, for a row kernel whose rows are longer than fusion.ROW_LIMIT
    (None for the persistent form, whose rows fit one block). A row is then walked block by
    block, once per *level* of reduction: the first pass sums (or maxes) what needs no
    reduction's result, the next what needs the first's results (batch norm's Σ(x - mean)²
    needs the mean), and a last pass computes and stores the full-size outputs. Returns
    (passes, stage): each pass is (reductions it accumulates, full nodes it computes in its
    loop); stage[node] is how many reduction levels a node waits for (row values of stage s
    are computed after pass s - 1)."""
    from ..fusion import ROW_LIMIT

    shape, dims = kernel.space
    if _prod(shape[d] for d in dims) <= ROW_LIMIT:
        return None
    members = set(kernel.nodes)
    stage = {}
    for node in kernel.nodes:
        before = max((stage[i] for i in node.inputs if i in members), default=0)
        stage[node] = before + 1 if node.op in ("reduce_sum", "reduce_max") else before
    reductions = [n for n in kernel.nodes if n.op in ("reduce_sum", "reduce_max")]
    levels = max((stage[r] for r in reductions), default=0)
    full = [n for n in kernel.nodes if n.shape == shape and n not in reductions]

    def needed(targets):
        """The full nodes the targets need, in graph order."""
        wanted, frontier = set(), list(targets)
        while frontier:
            node = frontier.pop()
            for i in ([node] if node in full else []) + list(node.inputs):
                if i in full and i not in wanted:
                    wanted.add(i)
                    frontier.append(i)
        return [n for n in full if n in wanted]

    passes = []
    for level in range(levels):
        accumulated = [r for r in reductions if stage[r] == level + 1]
        passes.append((accumulated, needed(accumulated)))
    stored = [o for o in kernel.outputs if o in full]
    if stored:
        passes.append(([], needed(stored)))
    return passes, stage


def generate(kernel, names, target):
    shape, dims = kernel.space
    kept = [d for d in range(len(shape)) if d not in dims]
    rows = _prod(shape[d] for d in kept)
    cols = _prod(shape[d] for d in dims)
    block_rows, block_cols = target.reduction_blocks(rows, cols)
    looped = row_passes(kernel)
    totals = [n for n in kernel.nodes if is_total(n, shape, dims)]
    if totals:                 # a sum over every row: one program holds them all
        block_rows = next_pow2(rows)
    reductions = [n for n in kernel.nodes if n.op in ("reduce_sum", "reduce_max")]
    how = (f"each row walked in blocks of BLOCK_COLS, {len(looped[0])} time(s)" if looped else
           "each row loaded once and kept in registers")
    src = KernelSource(kernel, names, family_note=f"{len(kernel.nodes)} nodes fused around "
                       f"{len(reductions)} reduction(s) over dims {tuple(dims)} of [{','.join(map(str, shape))}]: "
                       f"{rows} rows of {cols}, {how}")
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
    body = ["@triton.jit", f"def {kernel.name}({params}):"]
    if looped:
        body += [f"    # a program takes BLOCK_ROWS of the {rows} rows (dims {tuple(kept)}) and walks each row of "
                 f"{cols} columns (dims {tuple(dims)}) in blocks of BLOCK_COLS",
                 f"    rows = tl.program_id(0) * BLOCK_ROWS + {target.arange('BLOCK_ROWS')}[:, None]",
                 f"    row_mask = rows < {rows}"]
        body += [f"    {line}" for _, line in row_lines]
    else:
        body += [f"    # a program takes BLOCK_ROWS of the {rows} rows (dims {tuple(kept)}) and the whole of each row: "
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

    def loads(readers, along_rows):
        """The loads the readers need (along_rows: True, only those the same along each row;
        False, only those that vary along it; None, all)."""
        lines = []
        for reader in readers:
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
                row_value = at_shape == () or _anchored(offsets, "cols") != offsets
                if offsets in loaded.get(node, {}) or along_rows is not None and along_rows != row_value:
                    continue
                name = names[node] if node not in loaded else f"{names[node]}_{len(loaded[node])}"
                if at_shape == ():                             # read by a value of the whole kernel: one element
                    lines.append(f"{name} = tl.load({names[node]}_ptr + {offsets})")
                elif row_value:                                # the same along each row: a row value
                    lines.append(f"{name} = tl.load({names[node]}_ptr + {_anchored(offsets, 'rows')}, mask=row_mask)")
                else:
                    lines.append(f"{name} = tl.load({names[node]}_ptr + {_anchored(offsets, 'rows', 'cols')}, "
                                 "mask=mask, other=0)")
                loaded.setdefault(node, {})[offsets] = name
        return lines

    def read(reader, node):
        if node in value:
            return value[node]
        at_shape, at_index = reads_at(reader)
        view = kernel.inputs[node]
        view = view.expand(at_shape) if view.shape != at_shape else view
        return loaded[node][address(view, at_index)]

    def compute(node, accumulate=False):
        """The line computing node; a reduction in the looped form adds one block into its accumulator."""
        args = [read(node, i) for i in node.inputs]
        name = names[node]
        if node in totals:       # over the rows this (single) program holds: a [1, 1] tile
            fill, reduce = ("0", "tl.sum") if node.op == "reduce_sum" else ("float('-inf')", "tl.max")
            line = f"{name} = {reduce}(tl.where(row_mask, {args[0]}, {fill}), axis=0)[None, :]"
        elif node.op == "reduce_sum":
            block = f"tl.sum(tl.where(mask, {args[0]}, 0), axis=1)[:, None]"
            line = f"{name}_acc += {block}" if accumulate else f"{name} = {block}"
        elif node.op == "reduce_max":
            block = f"tl.max(tl.where(mask, {args[0]}, float('-inf')), axis=1)[:, None]"
            line = f"{name}_acc = tl.maximum({name}_acc, {block})" if accumulate else f"{name} = {block}"
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
        if not accumulate:
            value[node] = name
        return _commented(line, node_code(node, names))

    def store_full(out):
        return f"tl.store({names[out]}_ptr + {address(View.of(out), index)}, {names[out]}, mask=mask)"

    if not looped:
        body += [f"    {line}" for line in loads(kernel.nodes, None)]
        body += [compute(node) for node in kernel.nodes]
    else:
        passes, stage = looped
        row_nodes = [n for n in kernel.nodes if n.shape != shape or n.op in ("reduce_sum", "reduce_max")]
        body += [f"    {line}" for line in loads(kernel.nodes, True)]      # row values: loaded once
        body += [compute(n) for n in row_nodes if stage[n] == 0 and n.op not in ("reduce_sum", "reduce_max")]
        for number, (accumulated, computed) in enumerate(passes):
            last = not accumulated
            what = ("computes and stores the full-size outputs" if last else
                    "accumulates " + ", ".join(f"{names[r]} = {r.op}" for r in accumulated))
            body.append(f"    # pass {number + 1} of {len(passes)} over the row: {what}")
            for r in accumulated:
                start = "0" if r.op == "reduce_sum" else "float('-inf')"
                body.append(f"    {names[r]}_acc = tl.full((BLOCK_ROWS, 1), {start}, {TL_DTYPE[r.dtype]})")
            body += [f"    for col_start in range(0, {cols}, BLOCK_COLS):",
                     f"        cols = col_start + {target.arange('BLOCK_COLS')}[None, :]",
                     f"        mask = row_mask & (cols < {cols})"]
            body += [f"        {line}" for _, line in col_lines]
            for node in list(loaded):            # what varies along the row is loaded again in every pass
                loaded[node] = {o: n for o, n in loaded[node].items() if _anchored(o, "cols") != o}
                if not loaded[node]:
                    del loaded[node]
            body += [f"        {line}" for line in loads(computed + accumulated, False)]
            body += [f"    {compute(n)}" for n in computed]
            body += [f"    {compute(r, accumulate=True)}" for r in accumulated]
            if last:
                body += [f"        {store_full(o)}" for o in kernel.outputs if o in computed]
            for r in accumulated:
                body.append(f"    {names[r]} = {names[r]}_acc")
                value[r] = names[r]
            body += [compute(n) for n in row_nodes
                     if stage[n] == number + 1 and n.op not in ("reduce_sum", "reduce_max")]

    for out in kernel.outputs:
        if looped and out.shape == shape and out.shape not in (keepdim, dropped):
            continue                                                    # stored in the last pass
        if totals and out.shape == () and dropped != ():           # a value of the whole kernel
            body.append(f"    tl.store({names[out]}_ptr + tl.zeros((1, 1), tl.int32), {names[out]})")
        elif out.shape == shape and out.shape not in (keepdim, dropped):
            body.append(f"    {store_full(out)}")
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
