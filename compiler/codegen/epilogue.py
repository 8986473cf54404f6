"""Epilogues: the pointwise work a matmul or conv kernel does to its output tile.

A GEMM's result usually goes straight into a bias add, a residual add or an activation.
As kernels of their own these would read the whole output back from memory; fused
(compiler/fusion.py), they run on the accumulator tile while it is still in registers,
after the K loop and before the store:

    acc = Σ_k ...                      # the GEMM, as before
    b = tl.load(b_ptr + cols, ...)     # other inputs, read at the tile's output positions
    t1 = acc + b                       # one line per node, named and commented like the graph
    t2 = tl.where(t1 > 0, t1, 0.0)
    tl.store(t2_ptr + ..., t2, ...)    # only what is needed outside the kernel is stored

The GEMM is `kernel.nodes[0]`, the epilogue the nodes after it. Every epilogue value has
the GEMM's output shape or broadcasts into it, so each is read or computed at the same
(row, column) positions of the output tile; the generators (matmul.py, conv.py) say how an
output index is written in terms of their tile and hand it here.
"""
from __future__ import annotations

from ops.errors import BackendError
from ..fusion import riders
from ..lower import Literal, View
from ops.printer import node_code
from .common import TL_DTYPE, address, dims_needed, literal_code
from .pointwise import EXPRESSIONS, HELPERS, _commented


class Epilogue:
    """The epilogue of one GEMM kernel: which inputs it reads (as views over the output's
    shape), which output dimensions those reads need, and the statements it adds."""

    def __init__(self, kernel, names, acc="acc"):
        self.kernel = kernel
        self.names = names
        self.acc = acc                      # the variable holding the head's result
        self.gemm = kernel.nodes[0]
        self.riders = riders(kernel.nodes)          # sums riding along the K loop: not epilogue work
        self.nodes = [n for n in kernel.nodes[1:] if n not in self.riders]
        self.shape = self.gemm.shape
        own = set(kernel.nodes)
        self.views = {}                     # input node -> View over the output shape, or Literal
        for node in self.nodes:
            for i in node.inputs:
                if i in own or i in self.views:
                    continue
                where = kernel.inputs[i]
                self.views[i] = where.expand(self.shape) if isinstance(where, View) and where.shape != self.shape \
                    else where

    def __bool__(self):
        return bool(self.nodes)

    def rider_note(self):
        """The sums riding along, in a few words for the kernel's header (or "")."""
        return "".join(f"; {self.names[n]} = Σ_k {self.names[n.inputs[0]]} rides along the K loop"
                       for n in self.riders)

    def needed_dims(self):
        """The output dimensions whose index the epilogue reads (rand reads them all)."""
        if any(n.op == "rand" for n in self.nodes):
            return set(range(len(self.shape)))
        dims = {n.attrs["dim"] for n in self.nodes if n.op == "iota"}
        for view in self.views.values():
            if isinstance(view, View):
                dims |= dims_needed(view)
        return dims

    def note(self):
        """The epilogue in a few words, for the kernel's header: "epilogue: bias add, relu"."""
        words = []
        for node in self.nodes:
            if node.op == "expand":
                continue
            if node.op in ("add", "sub") and any(i.shape != node.shape and not i.is_scalar_const and i in self.views
                                                 for i in node.inputs):
                word = f"bias {node.op}"
            elif node.scope and node.scope[-1] not in ("linear", "conv2d", "matmul"):
                word = node.scope[-1]
            else:
                word = node.op
            word += " (backward)" if node.role == "backward" and not word.startswith("bias") else ""
            if word not in words:
                words.append(word)
        return "epilogue: " + ", ".join(words)

    def lines(self, src, index, pointer, mask, store_address, flat, tile_shape):
        """The statements after the K loop, indented for the kernel's body: load the other
        inputs at the tile's output positions, compute each node, store the outputs.

        index: the index expression of each output dimension; pointer(base, offset): the
        tile's pointers; mask: the output mask; store_address: the offset of element
        (rows, cols) in a contiguous output; flat: the element's row-major number (for
        rand); tile_shape: "(BLOCK_M, BLOCK_N)"."""
        names, gemm = self.names, self.gemm
        outputs = [n for n in self.kernel.outputs if n not in self.riders]
        stored = [names[n] for n in outputs if n is not gemm]
        held = f"{self.acc} holds {names[gemm]}" if self.acc != names[gemm] else names[gemm]
        acc_note = held + ("" if gemm in self.kernel.outputs else ", never stored itself")
        body = [f"    # {self.note()}, on the tile in registers; {acc_note}"]
        value = {gemm: self.acc}
        for node, view in self.views.items():
            name = names[node]
            if isinstance(view, Literal):
                value[node] = literal_code(view)
                continue
            if not dims_needed(view):                          # one value for the whole tile
                body.append(f"    {name} = tl.load({name}_ptr + {view.offset})")
            else:
                body.append(f"    {name} = tl.load({pointer(f'{name}_ptr', address(view, index))}, mask={mask})")
            value[node] = name
        for node in self.nodes:
            args = [value[i] for i in node.inputs]
            name, op = names[node], node.op
            if op in HELPERS:
                src.helper(HELPERS[op])
            if op in EXPRESSIONS:
                dtype = TL_DTYPE[node.attrs["dtype"]] if op == "cast" else TL_DTYPE[node.dtype]
                line = f"{name} = {EXPRESSIONS[op].format(*args, dtype=dtype)}"
            elif op == "expand":
                line = f"{name} = {args[0]}"
            elif op == "iota":
                along = index[node.attrs["dim"]]
                line = f"{name} = ({along} + tl.zeros({tile_shape}, tl.int32)).to({TL_DTYPE[node.dtype]})"
            elif op == "rand":
                # Philox's counter is the element's row-major index, as in the pointwise kernels
                line = f"{name} = tl.rand({args[0]}, {flat})"
            else:
                raise BackendError(f"fusion put {op} in an epilogue, which cannot compute it (a chainrule bug)", op=op)
            body.append(_commented(line, node_code(node, names)))
            value[node] = name
        if stored:
            also = f" and {names[gemm]}" if gemm in self.kernel.outputs else ""
            body.append(f"    # store {', '.join(stored)}{also}")
        for out in outputs:
            body.append(f"    tl.store({pointer(f'{names[out]}_ptr', store_address)}, {value[out]}, mask={mask})")
        return body


class Rider:
    """A sum riding along a GEMM's K loop (fusion.rides_along): the bias gradient Σ_k of an
    operand, added up tile by tile from the tiles the loop loads anyway. Every program sums
    its own tiles; only the programs of the first tile column (for A: a sum per row) or of
    the first tile row (for B: a sum per column) store it, so each element is written once."""

    def __init__(self, node, names, tile, axis, shape, keep):
        self.node, self.name = node, names[node]
        self.tile, self.axis, self.shape, self.keep = tile, axis, shape, keep
        self.operand = names[node.inputs[0]]

    def start(self):
        return [f"    {self.name} = tl.zeros({self.shape}, {TL_DTYPE[self.node.dtype]})   # "
                f"{self.name} = Σ_k {self.operand}, riding along the K loop (the bias gradient)"]

    def step(self):
        return [f"        {self.name} += tl.sum({self.tile}, axis={self.axis}){self.keep}"
                f"   # the sum over k of the tile just loaded"]

    def store(self, where, mask, first):
        return [f"    if {first}:   # {node_code(self.node, {self.node: self.name, self.node.inputs[0]: self.operand})}"
                ": stored once, by the first tile of its line",
                f"        tl.store({self.name}_ptr + {where}, {self.name}, mask={mask})"]
