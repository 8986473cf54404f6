"""Window kernels: the primitives behind pooling, over NCHW images, one output element per lane.

Window (out_h, out_w) of an image covers the cells

    row = out_h * stride_h - padding_h + kh * dilation_h     for kh in 0 .. KH-1
    col = out_w * stride_w - padding_w + kw * dilation_w     for kw in 0 .. KW-1

and position (kh, kw) has the offset kh * KW + kw inside it. Cells outside the image are
padding: 0 for window_sum and window_gather, -inf for window_argmax.

- window_sum, window_argmax: a lane per output cell walks its window (a loop over KH x KW
  that Triton unrolls, `tl.static_range`) keeping a sum, or the first max and its offset.
- window_gather: a lane per output cell reads the one cell its offset points at.
- window_sum_transpose, window_scatter (the gradients of window_sum and window_gather) are
  written in the *gather* form, so no two lanes ever write the same cell and no atomics are
  needed: a lane per input cell (n, c, in_h, in_w) asks, for each window position (kh, kw),
  which window puts that position on it: out_h = (in_h + padding_h - kh * dilation_h) /
  stride_h, when that is a whole number in [0, OH) (and likewise for columns); it adds that
  window's gradient (window_scatter: only when that window's argmax offset is kh * KW + kw).
"""
from __future__ import annotations

import numpy as np

from ops.families import WINDOW_FORWARD
from ops.printer import node_code

from . import blocks
from .common import TL_DTYPE, KernelSource, address
from .epilogue import Epilogue

# Names the kernels use for their own variables; a graph value with one of these names is
# loaded as <name>_value instead.
LOCALS = {"offs", "mask", "n", "c", "out_h", "out_w", "in_h", "in_w", "kh", "kw", "row", "col", "inside", "best",
          "better", "h_ok", "w_ok", "ok", "chosen"}
ACC_DTYPE = {"float32": "tl.float32", "float64": "tl.float64", "int32": "tl.int32", "int64": "tl.int64"}


def generate(kernel, names, target):
    node = kernel.nodes[0]          # max pooling fused: (window_argmax, window_gather), the argmax leads
    pooled = kernel.nodes[1] if node.op == "window_argmax" and len(kernel.nodes) == 2 else None
    epilogue = Epilogue(kernel, names, acc=names[node]) if not pooled and len(kernel.nodes) > 1 else None
    a = node.attrs
    window = dict(zip(("kernel", "stride", "padding", "dilation"),
                      (a["kernel_size"], a["stride"], a["padding"], a["dilation"])))
    lanes = node.shape                                          # one lane per element of the output
    total = int(np.prod(lanes))
    forward = node.op in WINDOW_FORWARD
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window.values()
    what_op = f"{node.op} + {pooled.op} (max pooling: the max and its offset in one pass)" if pooled else \
        f"{node.op}; {epilogue.note()}" if epilogue else node.op
    src = KernelSource(kernel, names, family_note=f"{what_op}, {kh}x{kw} windows, stride ({sh}, {sw}), padding "
                                                   f"({ph}, {pw}), dilation ({dh}, {dw}); one lane per output element")
    ins, outs = src.pointer_args()
    params = ", ".join([f"{p}_ptr" for p in ins + outs] + ["BLOCK: tl.constexpr"])
    labels = ("n", "c", "out_h", "out_w") if forward else ("n", "c", "in_h", "in_w")
    index_lines, index = _split(lanes, "offs", labels)
    what = "window (out_h, out_w) of image (n, c)" if forward else "input cell (n, c, in_h, in_w)"
    body = ["@triton.jit", f"def {kernel.name}({params}):",
            f"    # a lane per element of the {node.type_str} output: {what}",
            f"    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
            f"    mask = offs < {total}"]
    body += [f"    {line}" for line in index_lines]
    make = {"window_sum": _window_sum, "window_argmax": _window_argmax, "window_gather": _window_gather,
            "window_sum_transpose": _window_sum_transpose, "window_scatter": _window_scatter}[node.op]
    body += [f"    {line}" for line in make(kernel, names, index, window)]
    if pooled is not None:
        body.append(f"    {names[pooled]} = best    # {node_code(pooled, names)}: the max, found on the way")
    if epilogue:
        body += epilogue.lines(src, index, lambda base, offset: f"{base} + {offset}", "mask", "offs", "offs",
                               "(BLOCK,)")
    else:
        for out in kernel.outputs:
            body.append(f"    tl.store({names[out]}_ptr + offs, {names[out]}, mask=mask)")
    src.body = body
    args = ", ".join(ins + outs)
    # on a GPU the autotuner picks the block (runtime/executors/autotune.py); under the interpreter, the largest
    gpu = [{"BLOCK": 256, "num_warps": 4}, {"BLOCK": 512, "num_warps": 4}, {"BLOCK": 1024, "num_warps": 8}]
    src.launch = blocks.launch_lines(kernel.name, args, gpu, blocks.pointwise(total)[1],
                                     f"(triton.cdiv({total}, BLOCK),)")
    return src.text()


def _split(shape, flat, labels):
    """Statements splitting the row-major index `flat` over the 4-D `shape` into named indices:
    "0" for a batch or channel dimension of size 1; a row or column index is always a tensor
    (the window arithmetic on it must stay a tensor: the interpreter mishandles `&` on two
    constant conditions). An empty dimension (an empty batch) counts as size 1: the kernel
    is never launched, its text only has to be valid."""
    shape = [max(size, 1) for size in shape]
    lines, names, inner = [], [], int(np.prod(shape))
    for d, (size, label) in enumerate(zip(shape, labels)):
        inner //= size
        if size == 1 and d < 2:
            names.append("0")
            continue
        if size == 1:
            lines.append(f"{label} = tl.zeros_like({flat})    # a single {'row' if d == 2 else 'column'}")
            names.append(label)
            continue
        expr = flat if inner == 1 else f"({flat} // {inner})"
        lines.append(f"{label} = {expr}" + (f" % {size}" if d > 0 else ""))
        names.append(label)
    return lines, names


def _cell(out, stride, pad, k, dilation):
    """out * stride - pad + k * dilation as source: the image row (or column) of window
    position k."""
    text = f"{out if stride == 1 else f'{out} * {stride}'} + {k if dilation == 1 else f'{k} * {dilation}'}"
    return f"{text} - {pad}" if pad else text


def _inside(var, size, pad):
    """The bounds test of an image row/column; without padding every window lies inside the image."""
    return [f"({var} >= 0)", f"({var} < {size})"] if pad else []


def _value(names, node):
    """The variable holding a loaded value: the graph's name for it, unless a local has it."""
    name = names[node]
    return f"{name}_value" if name in LOCALS or name.startswith(("out_h_x", "out_w_x")) else name


def _walk(kernel, index, window, visit):
    """Lines looping over the KH x KW positions of each lane's window; `visit(mask, where)`
    gives the lines for one position, where `mask` tells which lanes' cell is in the image
    and `where` is that cell's address in x."""
    x = kernel.nodes[0].inputs[0]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window.values()
    n, c, out_h, out_w = index
    h, w = x.shape[2:]
    inside = ["mask", *_inside("row", h, ph), *_inside("col", w, pw)]
    where = _per_lane(address(kernel.inputs[x], [n, c, "row", "col"]))
    lines = [f"for kh in tl.static_range({kh}):    # unrolled: kh and kw are constants",
             f"    row = {_cell(out_h, sh, ph, 'kh', dh)}    # the image row of window position kh",
             f"    for kw in tl.static_range({kw}):",
             f"        col = {_cell(out_w, sw, pw, 'kw', dw)}"]
    if len(inside) > 1:
        lines.append(f"        inside = {' & '.join(inside)}    # padding is not loaded: it reads as `other`")
    lines += [f"        {line}" for line in visit("inside" if len(inside) > 1 else "mask", where)]
    return lines


def _window_sum(kernel, names, index, window):
    """y[n, c, out_h, out_w] = Σ over the window (padding adds 0)."""
    node, x = kernel.nodes[0], kernel.nodes[0].inputs[0]
    acc, y, xn = ACC_DTYPE[node.dtype], names[node], _value(names, x)
    visit = lambda inside, where: [f"{xn} = tl.load({names[x]}_ptr + {where}, mask={inside}, other=0)",
                                   f"{y} += {xn}.to({acc})"]
    return [f"{y} = tl.zeros((BLOCK,), {acc})    # the window's running sum",
            *_walk(kernel, index, window, visit)]


def _window_argmax(kernel, names, index, window):
    """y[n, c, out_h, out_w] = kh * KW + kw of the first max of the window (padding is -inf)."""
    node, x = kernel.nodes[0], kernel.nodes[0].inputs[0]
    y, xn = names[node], _value(names, x)
    kw = window["kernel"][1]
    floating = x.dtype in ("float32", "float64")
    lowest = "float('-inf')" if floating else str(np.iinfo(x.dtype).min) if x.dtype != "bool" else "0"

    def visit(inside, where):
        lines = [f"{xn} = tl.load({names[x]}_ptr + {where}, mask={inside}, other={lowest})"]
        if floating:     # NaN counts as larger than anything, as in NumPy and torch
            lines.append(f"better = ({xn} > best) | (({xn} != {xn}) & (best == best))"
                         "    # strictly: an earlier max wins a tie; so does the first NaN")
        else:
            lines.append(f"better = {xn} > best    # strictly: an earlier max wins a tie")
        return lines + [f"{y} = tl.where(better, kh * {kw} + kw, {y})",
                        f"best = tl.where(better, {xn}, best)"]

    return [f"best = tl.full((BLOCK,), {lowest}, {TL_DTYPE[x.dtype]})    # the largest value seen so far",
            f"{y} = tl.zeros((BLOCK,), tl.int64)    # and its offset in the window",
            *_walk(kernel, index, window, visit)]


def _window_gather(kernel, names, index, window):
    """y[n, c, out_h, out_w] = the cell at offset idx[n, c, out_h, out_w] of its window."""
    node = kernel.nodes[0]
    x, idx = node.inputs
    (_, kw), (sh, sw), (ph, pw), (dh, dw) = window.values()
    n, c, out_h, out_w = index
    h, w = x.shape[2:]
    y, dn = names[node], _value(names, idx)
    inside = ["mask", *_inside("row", h, ph), *_inside("col", w, pw)]
    return [f"{dn} = tl.load({names[idx]}_ptr + {_per_lane(address(kernel.inputs[idx], index))}, mask=mask)"
            f"    # the offset kh * {kw} + kw of the cell to read",
            f"row = {_cell(out_h, sh, ph, f'({dn} // {kw})', dh)}    # its image row: kh = offset // {kw}",
            f"col = {_cell(out_w, sw, pw, f'({dn} % {kw})', dw)}    # and column: kw = offset % {kw}",
            f"{y} = tl.load({names[x]}_ptr + {_per_lane(address(kernel.inputs[x], [n, c, 'row', 'col']))}, "
            f"mask={' & '.join(inside)}, other=0)"]


def _origin(cell, pad, k, dilation):
    """cell + pad - k * dilation as source: out * stride for the window that puts position k on `cell`."""
    text = f"{cell} + {pad}" if pad else cell
    return f"{text} - {k if dilation == 1 else f'{k} * {dilation}'}"


def _solve(axis, cell, size, stride, pad, k, dilation):
    """Lines setting out_<axis> to the window whose position k lies on `cell`, and <axis>_ok
    to whether that window exists (a whole number in [0, size))."""
    out, ok = f"out_{axis}", f"{axis}_ok"
    if stride == 1:
        return [f"{out} = {_origin(cell, pad, k, dilation)}",
                f"{ok} = ({out} >= 0) & ({out} < {size})"]
    scaled = f"{out}_x{stride}"      # out * stride; the window exists when it is a multiple of the stride
    return [f"{scaled} = {_origin(cell, pad, k, dilation)}",
            f"{out} = {scaled} // {stride}",
            f"{ok} = ({scaled} >= 0) & ({scaled} % {stride} == 0) & ({out} < {size})"]


def _gather_back(kernel, index, window, visit):
    """Lines looping over the KH x KW window positions of each lane's input cell; `visit(ok,
    index)` gives the lines for the windows that exist, at their [n, c, out_h, out_w]."""
    g = kernel.nodes[0].inputs[0]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window.values()
    n, c, in_h, in_w = index
    oh, ow = g.shape[2:]
    row = _solve("h", in_h, oh, sh, ph, "kh", dh)
    col = _solve("w", in_w, ow, sw, pw, "kw", dw)
    return [f"for kh in tl.static_range({kh}):    # unrolled: kh and kw are constants",
            f"    # the window out_h whose position kh lies on row in_h: {_cell('out_h', sh, ph, 'kh', dh)} == in_h",
            *[f"    {line}" for line in row],
            f"    for kw in tl.static_range({kw}):",
            "        # and the window out_w whose position kw lies on column in_w",
            *[f"        {line}" for line in col],
            "        ok = mask & h_ok & w_ok",
            *[f"        {line}" for line in visit("ok", [n, c, "out_h", "out_w"])]]


def _per_lane(where):
    """An address for every lane: a single window or a 1x1 image makes the address a constant,
    and a masked load needs a block of pointers."""
    return where if any(ch.isalpha() for ch in where) else f"{where} + tl.zeros((BLOCK,), tl.int32)"


def _window_sum_transpose(kernel, names, index, window):
    """dx[n, c, in_h, in_w] = Σ of g over the windows that cover the cell."""
    node, g = kernel.nodes[0], kernel.nodes[0].inputs[0]
    acc, dx, gn = ACC_DTYPE[node.dtype], names[node], _value(names, g)
    where = lambda out_index: _per_lane(address(kernel.inputs[g], out_index))
    visit = lambda ok, out_index: [f"{gn} = tl.load({names[g]}_ptr + {where(out_index)}, mask={ok}, other=0)",
                                   f"{dx} += {gn}.to({acc})"]
    return [f"{dx} = tl.zeros((BLOCK,), {acc})    # the sum over the windows covering the cell",
            *_gather_back(kernel, index, window, visit)]


def _window_scatter(kernel, names, index, window):
    """dx[n, c, in_h, in_w] = Σ of g over the windows whose argmax offset points at the cell."""
    node = kernel.nodes[0]
    g, idx = node.inputs
    acc, dx, gn, dn = ACC_DTYPE[node.dtype], names[node], _value(names, g), _value(names, idx)
    kw = window["kernel"][1]

    def visit(ok, out_index):
        return [f"{dn} = tl.load({names[idx]}_ptr + {_per_lane(address(kernel.inputs[idx], out_index))}, mask={ok})",
                f"chosen = {ok} & ({dn} == kh * {kw} + kw)    # that window's max is this cell",
                f"{gn} = tl.load({names[g]}_ptr + {_per_lane(address(kernel.inputs[g], out_index))}, mask=chosen, "
                "other=0)",
                f"{dx} += {gn}.to({acc})"]

    return [f"{dx} = tl.zeros((BLOCK,), {acc})    # the sum over the windows whose max is the cell",
            *_gather_back(kernel, index, window, visit)]
