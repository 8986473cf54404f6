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

from ops.families import REDUCTIONS, ROW_REDUCTIONS
from ops.printer import node_code

from ..fusion import ROW_LIMIT, is_total, row_shapes
from ..lower import Literal, View
from . import blocks
from .common import TL_DTYPE, KernelSource, address, digits, literal_code
from .pointwise import EXPRESSIONS, HELPERS, _commented


def row_passes(kernel):
    """The looped form's plan, for a row kernel whose rows are longer than fusion.ROW_LIMIT
    (None for the persistent form, whose rows fit one block). A row is then walked block by
    block, once per *level* of reduction: the first pass sums (or maxes) what needs no
    reduction's result, the next what needs the first's results (batch norm's Σ(x - mean)²
    needs the mean), and a last pass computes and stores the full-size outputs. Returns
    (passes, stage): each pass is (reductions it accumulates, full nodes it computes in its
    loop); stage[node] is how many reduction levels a node waits for (row values of stage s
    are computed after pass s - 1)."""
    shape, dims = kernel.space
    if _prod(shape[d] for d in dims) <= ROW_LIMIT:
        return None
    members = set(kernel.nodes)
    stage = {}
    for node in kernel.nodes:
        before = max((stage[i] for i in node.inputs if i in members), default=0)
        stage[node] = before + 1 if node.op in ROW_REDUCTIONS else before
    reductions = [n for n in kernel.nodes if n.op in ROW_REDUCTIONS]
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
    """The row kernel's file, in the order a reader meets it: the program's rows and columns,
    its loads and its nodes (in one pass over each row, or in the looped form one pass per
    level of reduction), the stores, and the launch."""
    k = _RowKernel(kernel, names, target)
    body = k.signature() + k.rows_and_columns()
    body += k.looped_passes() if k.looped else k.one_pass()
    body += k.stores()
    k.src.body = body
    k.src.launch = k.launch()
    return k.src.text()


class _RowKernel:
    """What the steps of `generate` share: the iteration space seen as rows and columns, each
    node's index, and the registers holding each value so far.

    Each node computes in its own index space, mapped onto (rows, cols): a full node by every
    digit, a row node (keepdim or not) by the row digits alone. An input is read the way its
    reader broadcasts it (NumPy's right-aligned rule) in the reader's own index space."""

    def __init__(self, kernel, names, target):
        self.kernel, self.names, self.target = kernel, names, target
        self.shape, self.dims = shape, dims = kernel.space
        self.kept = [d for d in range(len(shape)) if d not in dims]
        self.rows = _prod(shape[d] for d in self.kept)
        self.cols = _prod(shape[d] for d in dims)
        self.looped = row_passes(kernel)
        self.totals = [n for n in kernel.nodes if is_total(n, shape, dims)]
        self.reductions = [n for n in kernel.nodes if n.op in ROW_REDUCTIONS]
        self.keepdim, self.dropped = row_shapes(shape, dims)
        self.row_lines, row_index = digits([shape[d] for d in self.kept], "rows", var="r")
        self.col_lines, col_index = digits([shape[d] for d in dims], "cols", var="c")
        self.index = [None] * len(shape)
        for d, name in zip(self.kept, row_index):
            self.index[d] = name
        for d, name in zip(dims, col_index):
            self.index[d] = name
        how = (f"each row walked in blocks of BLOCK_COLS, {len(self.looped[0])} time(s)" if self.looped else
               "each row loaded once and kept in registers")
        self.src = KernelSource(kernel, names, family_note=f"{len(kernel.nodes)} nodes fused around "
                                f"{len(self.reductions)} reduction(s) over dims {tuple(dims)} of "
                                f"[{','.join(map(str, shape))}]: {self.rows} rows of {self.cols}, {how}")
        self.ins, self.outs = self.src.pointer_args()
        self.value = {}         # node -> the expression holding it (a register's name, or a literal)
        self.loaded = {}        # input node -> {offsets: the name it was loaded as}

    # -- the steps of generate, in order ---------------------------------------------------------
    def signature(self):
        params = ", ".join([f"{p}_ptr" for p in self.ins + self.outs] +
                           ["BLOCK_ROWS: tl.constexpr", "BLOCK_COLS: tl.constexpr"])
        return ["@triton.jit", f"def {self.kernel.name}({params}):"]

    def rows_and_columns(self):
        """The program's block of rows, and (persistent form) the whole of each row."""
        rows, cols, kept, dims = self.rows, self.cols, tuple(self.kept), tuple(self.dims)
        if self.looped:
            lines = [f"    # a program takes BLOCK_ROWS of the {rows} rows (dims {kept}) and walks each row of "
                     f"{cols} columns (dims {dims}) in blocks of BLOCK_COLS",
                     "    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]",
                     f"    row_mask = rows < {rows}"]
            return lines + [f"    {line}" for _, line in self.row_lines]
        lines = [f"    # a program takes BLOCK_ROWS of the {rows} rows (dims {kept}) and the whole of each row: "
                 f"{cols} columns (dims {dims})",
                 "    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)[:, None]",
                 "    cols = tl.arange(0, BLOCK_COLS)[None, :]",
                 f"    row_mask = rows < {rows}",
                 f"    mask = row_mask & (cols < {cols})"]
        return lines + [f"    {line}" for _, line in self.row_lines + self.col_lines]

    def one_pass(self):
        """The persistent form: load every input, then compute every node, in graph order."""
        lines = [f"    {line}" for line in self.loads(self.kernel.nodes, None)]
        return lines + self.computes(self.kernel.nodes)

    def looped_passes(self):
        """The looped form: row values loaded once, then one loop over the row per pass (see
        row_passes), each accumulating a level of reductions; the last computes and stores the
        full-size outputs."""
        passes, stage = self.looped
        names = self.names
        row_nodes = [n for n in self.kernel.nodes if n.shape != self.shape or n.op in ROW_REDUCTIONS]
        body = [f"    {line}" for line in self.loads(self.kernel.nodes, True)]      # row values: loaded once
        body += self.computes(n for n in row_nodes if stage[n] == 0 and n.op not in ROW_REDUCTIONS)
        for number, (accumulated, computed) in enumerate(passes):
            last = not accumulated
            what = ("computes and stores the full-size outputs" if last else
                    "accumulates " + ", ".join(f"{names[r]} = {r.op}" for r in accumulated))
            body.append(f"    # pass {number + 1} of {len(passes)} over the row: {what}")
            for r in accumulated:
                start = self.identity(r)
                body.append(f"    {names[r]}_acc = tl.full((BLOCK_ROWS, 1), {start}, {TL_DTYPE[r.dtype]})")
            body += [f"    for col_start in range(0, {self.cols}, BLOCK_COLS):",
                     "        cols = col_start + tl.arange(0, BLOCK_COLS)[None, :]",
                     f"        mask = row_mask & (cols < {self.cols})"]
            body += [f"        {line}" for _, line in self.col_lines]
            for node in list(self.loaded):            # what varies along the row is loaded again in every pass
                self.loaded[node] = {o: n for o, n in self.loaded[node].items() if not _varies(o, "cols")}
                if not self.loaded[node]:
                    del self.loaded[node]
            body += [f"        {line}" for line in self.loads(computed + accumulated, False)]
            body += [f"    {line}" for line in self.computes(computed)]
            body += [f"    {self.compute(r, accumulate=True)}" for r in accumulated]
            if last:
                body += [f"        {self.store_full(o)}" for o in self.kernel.outputs if o in computed]
            for r in accumulated:
                body.append(f"    {names[r]} = {names[r]}_acc")
                self.value[r] = names[r]
            body += self.computes(n for n in row_nodes if stage[n] == number + 1 and n.op not in ROW_REDUCTIONS)
        return body

    def stores(self):
        """Every output not stored yet: whole rows, one value per row, or the kernel's total."""
        body = []
        for out in self.kernel.outputs:
            full = out.shape == self.shape and out.shape not in (self.keepdim, self.dropped)
            if self.looped and full:
                continue                                                # stored in the last pass
            if self.totals and out.shape == () and self.dropped != ():  # a value of the whole kernel: a [1, 1] tile
                body.append(f"    tl.store(tl.broadcast_to({self.names[out]}_ptr, (1, 1)), {self.value[out]})")
            elif full:
                body.append(f"    {self.store_full(out)}")
            else:
                body.append(f"    tl.store({self.names[out]}_ptr + rows, {self.value[out]}, mask=row_mask)")
        return body

    def launch(self):
        gpu, interpreter = blocks.rows(self.rows, self.cols, looped=bool(self.looped))
        if self.totals:                 # a sum over every row: one program holds them all
            gpu = [{**c, "BLOCK_ROWS": blocks.next_pow2(self.rows)} for c in gpu]
            interpreter = [{**c, "BLOCK_ROWS": blocks.next_pow2(self.rows)} for c in interpreter]
        return blocks.launch_lines(self.kernel.name, ", ".join(self.ins + self.outs), gpu, interpreter,
                                   f"(triton.cdiv({self.rows}, BLOCK_ROWS),)")

    # -- indices and loads ---------------------------------------------------------------------------
    def reads_at(self, reader):
        """(shape, index) the reader reads its inputs at: a reduction reads whole rows, a
        total reads one value per row."""
        if reader in self.totals or reader.op == "reshape":     # one value per row; (rows,) <-> (rows, 1) as it is
            return reader.inputs[0].shape, self.own_index(reader.inputs[0])
        if reader.op in ROW_REDUCTIONS:
            return self.shape, self.index
        return reader.shape, self.own_index(reader)

    def own_index(self, node):
        if node.shape == self.shape:
            return self.index
        if node.shape == ():
            return []
        if node.shape == self.keepdim:
            return [self.index[d] if d not in self.dims else "0" for d in range(len(self.shape))]
        return [self.index[d] for d in self.kept]

    def loads(self, readers, along_rows):
        """The loads the readers need (along_rows: True, only those the same along each row;
        False, only those that vary along it; None, all)."""
        lines, names = [], self.names
        for reader in readers:
            for node in reader.inputs:
                where = self.kernel.inputs.get(node)
                if where is None or node in self.value and not isinstance(where, View):
                    continue
                if isinstance(where, Literal):
                    self.value[node] = literal_code(where)
                    continue
                at_shape, at_index = self.reads_at(reader)
                view = where.expand(at_shape) if where.shape != at_shape else where
                offsets = address(view, at_index)
                row_value = at_shape == () or not _varies(offsets, "cols")
                if offsets in self.loaded.get(node, {}) or along_rows is not None and along_rows != row_value:
                    continue
                name = names[node] if node not in self.loaded else f"{names[node]}_{len(self.loaded[node])}"
                pointer = f"{names[node]}_ptr + {offsets}"
                if at_shape == ():                             # read by a value of the whole kernel: one element
                    lines.append(f"{name} = tl.load({pointer})")
                elif row_value:                                # the same along each row: a row value
                    lines.append(f"{name} = tl.load({_lanes(pointer, offsets, ('rows',))}, mask=row_mask)")
                else:
                    lines.append(f"{name} = tl.load({_lanes(pointer, offsets, ('rows', 'cols'))}, "
                                 "mask=mask, other=0)")
                self.loaded.setdefault(node, {})[offsets] = name
        return lines

    def read(self, reader, node):
        if node in self.value:
            return self.value[node]
        at_shape, at_index = self.reads_at(reader)
        view = self.kernel.inputs[node]
        view = view.expand(at_shape) if view.shape != at_shape else view
        return self.loaded[node][address(view, at_index)]

    # -- nodes and stores ------------------------------------------------------------------------------
    def identity(self, reduction):
        """What a reduction starts from (and a masked-off lane adds), as Triton source."""
        return literal_code(Literal(REDUCTIONS[reduction.op].identity_of(reduction.inputs[0].dtype),
                                    reduction.inputs[0].dtype))

    def computes(self, nodes):
        """The lines computing `nodes`; a node that only renames its input (a reshape between
        the two forms of a row value, an expand Triton's broadcasting does) has none."""
        lines = [self.compute(node) for node in nodes]
        return [line for line in lines if line is not None]

    def compute(self, node, accumulate=False):
        """The line computing node; a reduction in the looped form adds one block into its accumulator."""
        args = [self.read(node, i) for i in node.inputs]
        name = self.names[node]
        if node.op in ("reshape", "expand"):     # the same registers under the node's name
            self.value[node] = args[0]
            return None
        reduction = REDUCTIONS.get(node.op)
        if reduction is not None and reduction.helper:
            self.src.helper(list(reduction.helper))
        if node in self.totals:       # over the rows this (single) program holds: a [1, 1] tile
            line = f"{name} = {reduction.triton}(tl.where(row_mask, {args[0]}, {self.identity(node)}), axis=0)[None, :]"
        elif reduction is not None:
            block = f"{reduction.triton}(tl.where(mask, {args[0]}, {self.identity(node)}), axis=1)[:, None]"
            line = reduction.accumulate.format(acc=f"{name}_acc", block=block) if accumulate else f"{name} = {block}"
        elif node.op == "iota":       # its index along dim, in every lane of the [BLOCK_ROWS, BLOCK_COLS] tile
            along = self.index[node.attrs["dim"]]
            tile = ("tl.zeros((BLOCK_ROWS, BLOCK_COLS), tl.int32)" if along == "0" else
                    f"tl.broadcast_to({along}, (BLOCK_ROWS, BLOCK_COLS))")
            line = f"{name} = {tile}.to({TL_DTYPE[node.dtype]})"
        else:
            if node.op in HELPERS:
                self.src.helper(HELPERS[node.op])
            dtype = TL_DTYPE[node.attrs["dtype"]] if node.op == "cast" else TL_DTYPE[node.dtype]
            line = f"{name} = {EXPRESSIONS[node.op].format(*args, dtype=dtype)}"
        if not accumulate:
            self.value[node] = name
        return _commented(line, node_code(node, self.names))

    def store_full(self, out):
        return f"tl.store({self.names[out]}_ptr + {address(View.of(out), self.index)}, {self.value[out]}, mask=mask)"


def _varies(where, axis):
    """Does the address `where` vary along `axis` ("rows" or "cols": it names the axis or one of
    its digits r0, r1, ... / c0, c1, ...)?"""
    return axis in where or any(f"{axis[0]}{k}" in where for k in range(8))


def _lanes(pointer, offsets, axes):
    """A load's pointers, one per lane of its tile: when the address does not vary along one of
    the tile's `axes` (an input broadcast along the rows, or the columns), the pointer is
    broadcast to the tile's shape explicitly."""
    if all(_varies(offsets, a) for a in axes):
        return pointer
    shape = "(BLOCK_ROWS, 1)" if axes == ("rows",) else "(BLOCK_ROWS, BLOCK_COLS)"
    return f"tl.broadcast_to({pointer}, {shape})"


def _prod(sizes):
    total = 1
    for s in sizes:
        total *= s
    return total
