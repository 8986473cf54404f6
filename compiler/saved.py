"""What the forward saves for the backward, and why (think jax's `print_saved_residuals`).

In a joint graph the backward reads some values the forward computed: relu's mask, the
input of a matmul (for the weight's gradient), the output of exp. Each such value must stay
in memory from the moment the forward makes it until the backward's last read of it; these
*saved values* (residuals) are most of a training step's memory. Here a saved value is a
node computed by the forward (role "forward", or an input of the graph) that at least one
backward node reads. Constants are part of the program, not saved.

Inputs (parameters, data) are listed apart: they are kept for the whole step anyway.

Bytes are counted per *memory*: a layout view (reshape, permute, expand, slice) costs no
memory of its own, so a saved view keeps its source's memory alive, exactly as the lowering
(`compiler.lower`) makes it a view of that buffer. A view and its source saved together are
counted once; a view of an input counts with the inputs.

Why a value is saved: for each backward node that reads it, the forward op whose vjp made
that node. Autodiff builds the vjp of a forward node under that node's source line and
scope, so the backward reader is matched to the forward node with the same line and scope
whose vjp (traced once, on symbolic inputs of the same shapes) reads that value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ops import ir
from ops.families import POINTWISE_FAMILIES, SOURCE_OPS, VIEW_OPS
from ops.primitive import REGISTRY
from ops.printer import node_code, value_names
from ops.tensor import Tensor

from .lower import lower

# the inputs of one vjp, as `_vjp_reads` names them: "out" or the position of an input
OUT = "out"


@dataclass(frozen=True)
class SavedValue:
    """One value the backward reads from the forward."""

    node: object            # the forward node (or graph input)
    name: str               # its name in the printed program: t3, primals_1
    type: str               # f32[64,10]
    bytes: int              # its own size
    source: str             # the user's line: zoo.py:72 ('' if unknown)
    is_input: bool          # a graph input (a parameter or data), kept anyway
    base: object            # the node whose memory it is: itself, or the source of a view
    base_name: str
    readers: tuple          # the backward nodes that read it, in graph order
    reasons: tuple          # why, for a learner: one phrase per kind of reader

    @property
    def is_view(self):
        return self.base is not self.node

    @property
    def why(self):
        return "; ".join(self.reasons)


# -- which values -------------------------------------------------------------------------------

def itemsize(dtype):
    return np.dtype(dtype).itemsize


def nbytes(node):
    return node.numel * itemsize(node.dtype)


def _is_backward(node):
    return node.role != "forward"


def _is_saveable(node):
    """A value the forward holds in memory: an input or a computed forward node (constants are
    part of the program)."""
    return node.op == "input" or (node.role == "forward" and node.op != "const")


def storage(graph):
    """node -> the node whose memory holds its value (a view's source buffer, else itself)."""
    views = lower(graph).views
    return {n: (views[n].base if n in views else n) for n in graph.nodes}


def recomputable(node):
    """May `node` be recomputed in the backward? (compiler/remat.py's docstring says why.)"""
    if node.op in ("input", "const"):
        return False
    if node.op in SOURCE_OPS:
        return True
    if node.op == "expand" and node.inputs[0].is_scalar_const:
        return True                                  # a splat: a constant in a shape
    prim = REGISTRY.get(node.op)
    return prim is not None and prim.family in POINTWISE_FAMILIES


def saved_nodes(graph):
    """The saved nodes, in graph order, with the backward nodes that read each."""
    readers = {}
    for node in graph.nodes:
        if not _is_backward(node):
            continue
        for i in node.inputs:
            if _is_saveable(i):
                lst = readers.setdefault(i, [])
                if node not in lst:
                    lst.append(node)
    return [(n, readers[n]) for n in graph.nodes if n in readers]


def saved_values(graph):
    """Every value the forward saves for the backward, inputs first, then forward values in
    the order the forward computes them."""
    names = value_names(graph)
    base_of = storage(graph)
    explain = _Explainer(graph, names)
    values = []
    for node, readers in saved_nodes(graph):
        base = base_of.get(node, node)
        values.append(SavedValue(
            node=node, name=names[node], type=node.type_str, bytes=nbytes(node),
            source=str(node.source) if node.source else "", is_input=node.op == "input",
            base=base, base_name=names.get(base, "?"),
            readers=tuple(readers), reasons=explain.all(node, readers)))
    return [v for v in values if v.is_input] + [v for v in values if not v.is_input]


def _memories(values):
    """(forward bytes, input bytes): each memory once; a view of an input counts as input."""
    forward, inputs = {}, {}
    for v in values:
        (inputs if v.base.op == "input" else forward)[v.base] = nbytes(v.base)
    return sum(forward.values()), sum(inputs.values())


def saved_bytes(graph):
    """Bytes of forward-computed values kept for the backward (each memory counted once;
    inputs, kept anyway, not counted)."""
    return _memories(saved_values(graph))[0]


def saved_input_bytes(graph):
    """Bytes of the inputs the backward reads (directly or through a view)."""
    return _memories(saved_values(graph))[1]


# -- why ----------------------------------------------------------------------------------------

_VJP_READS = {}


def _vjp_reads(node):
    """{"out" or input position: (ops of the vjp of `node` that read it directly, positions
    of the inputs whose cotangent it goes into)}, for what the vjp reads at all (traced once
    per op, attributes and types)."""
    prim = REGISTRY.get(node.op)
    if prim is None or prim.vjp is None:
        return {}
    key = (node.op, repr(sorted(node.attrs.items(), key=lambda kv: kv[0])),
           node.shape, node.dtype, tuple((i.shape, i.dtype) for i in node.inputs))
    if key in _VJP_READS:
        return _VJP_READS[key]
    trace = ir.Trace()
    reads = {}
    try:
        with ir.tracing(trace), ir.node_context(source=ir.Source("<vjp>", 0), scope=(), role="backward"):
            def placeholder(like, index):
                return Tensor(trace.add("input", (), {"index": index}, like.shape, like.dtype))
            g = placeholder(node, 0)
            out = placeholder(node, 1)
            ins = [placeholder(i, 2 + k) for k, i in enumerate(node.inputs)]
            cts = prim.vjp(g, out, *ins, **node.attrs)
        slot = {out.node: OUT, **{t.node: k for k, t in enumerate(ins)}}
        for k, ct in enumerate(cts):
            live, stack = set(), [ct.node] if ct is not None else []
            while stack:
                n = stack.pop()
                if n not in live:
                    live.add(n)
                    stack.extend(n.inputs)
            for n in trace.nodes:
                if n in live:
                    for i in n.inputs:
                        if i in slot:
                            ops, grads = reads.setdefault(slot[i], (set(), set()))
                            ops.add(n.op)
                            grads.add(k)
    except Exception:  # noqa: BLE001  (an explanation is a nicety; never fail a compile over it)
        reads = {}
    _VJP_READS[key] = reads
    return reads


def _view_chain(node):
    """node, and the values it is a layout view of (simplify folds permute(permute(w)) to w,
    so a vjp's read of matmul's input permute(w) shows up as a read of w)."""
    chain = [node]
    while node.op in VIEW_OPS and node.role == "forward":
        node = node.inputs[0]
        chain.append(node)
    return chain


def _where(node):
    """The composite or layer a node belongs to, innermost first: log_softmax, relu, linear."""
    scope = list(node.scope)
    if scope and scope[-1] == node.op:
        scope.pop()
    return f" in {scope[-1]}" if scope else ""


class _Explainer:
    """Phrases why backward nodes read a saved value."""

    def __init__(self, graph, names):
        self.names = names
        self.forward = {}
        # After simplify (CSE) no backward node computes what a forward node computes, unless
        # it is a recomputed copy (see compiler.remat): its twin is that forward node.
        self.twin = {}
        computed = {}
        for n in graph.nodes:
            if n.op in ("input", "const"):
                continue
            key = (n.op, tuple(id(self.twin.get(i, i)) for i in n.inputs),
                   repr(sorted(n.attrs.items(), key=lambda kv: kv[0])))
            if n.role == "forward":
                self.forward.setdefault((n.source, n.scope), []).append(n)
                computed.setdefault(key, n)
            elif key in computed:
                self.twin[n] = computed[key]

    def all(self, value, readers):
        """One phrase per kind of reader, the readers' code grouped: `read by the backward of
        exp (t20 = mul(t19, t3)) in log_softmax`."""
        groups = {}
        for reader in readers:
            groups.setdefault(self.kind(value, reader), []).append(node_code(reader, self.names))
        return tuple(f"{head} ({'; '.join(codes)}){where}{tail}" for (head, where, tail), codes in groups.items())

    def kind(self, value, reader):
        """(what reads it, where, what for), for one backward reader."""
        twin = self.twin.get(reader)
        if twin is not None:
            return f"read in the backward to recompute {self.names.get(twin, twin.op)}", _where(twin), ""
        owner, grads = self._owner(value, reader)
        if owner is not None:
            # the learner's question: which parameter's gradient needs it (matmul's input: the weight's)
            params = [_view_chain(owner.inputs[k])[-1] for k in sorted(grads)]
            params = [self.names[p] for p in params if p.op == "input"]
            tail = f", for the gradient of {' and '.join(dict.fromkeys(params))}" if params else ""
            return f"read by the backward of {owner.op}", _where(owner), tail
        if recomputable(reader):
            return f"read in the backward to recompute {reader.op}", _where(reader), ""
        return "read by the backward", _where(reader), ""

    def _owner(self, value, reader):
        """The forward node whose vjp made `reader` and reads `value`, and the positions of
        its inputs whose gradients that read is for; (None, ()) if not found."""
        loose = (None, ())
        for f in self.forward.get((reader.source, reader.scope), ()):
            slots = [OUT] if f is value else []
            slots += [k for k, i in enumerate(f.inputs) if value in _view_chain(i)]
            if not slots:
                continue
            reads = _vjp_reads(f)
            ops = set().union(*(reads[s][0] for s in slots if s in reads))
            grads = set().union(*(reads[s][1] for s in slots if s in reads))
            if reader.op in ops:
                return f, grads             # the vjp reads it with this very op
            if ops and loose[0] is None:
                loose = (f, grads)          # it reads it (simplify may have changed the op)
        return loose


# -- the report ---------------------------------------------------------------------------------

def _table(values):
    rows = [(v.name, v.type, f"{v.bytes}", v.source) for v in values]
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = []
    for v, row in zip(values, rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), (row[2] + " B").rjust(widths[2] + 2),
                 row[3].ljust(widths[3])]
        head = "  " + "  ".join(cells) + "  "
        notes = []
        if v.is_view:
            notes.append(f"a view of {v.base_name}: its memory is {v.base_name}'s")
        lines.append(head + "; ".join(notes + list(v.reasons)))
    return lines


def saved_report(graph, before=None):
    """The text of 05_saved.txt: every value the forward keeps for the backward, its type,
    bytes and source line, and which backward nodes read it. `before`: the same program
    before rematerialization, to compare."""
    values = saved_values(graph)
    inputs = [v for v in values if v.is_input]
    forward = [v for v in values if not v.is_input]
    fwd_bytes, in_bytes = _memories(values)
    lines = [f"What the forward of {graph.name} saves for the backward, and why.",
             "",
             "A saved value is computed by the forward and read by the backward: it stays in memory",
             "from the moment the forward makes it until the backward's last read of it.",
             ""]
    if not any(_is_backward(n) for n in graph.nodes):
        return "\n".join(lines[:1] + ["", f"{graph.name} has no backward: the forward saves nothing."]) + "\n"
    if forward:
        lines.append(f"Saved by the forward ({len(forward)} value{'s' if len(forward) != 1 else ''}):")
        lines += _table(forward)
    else:
        lines.append("The backward reads nothing the forward computed.")
    lines.append("")
    if inputs:
        lines.append(f"Inputs the backward reads ({len(inputs)}; kept for the whole step anyway):")
        lines += _table(inputs)
    else:
        lines.append("The backward reads no input.")
    lines += ["", (f"Total saved: {fwd_bytes} B computed by the forward (a view counts as its source, once); "
                   f"{in_bytes} B of inputs.")]
    if before is not None:
        old = _memories(saved_values(before))
        lines.append(f"Rematerialization: {old[0]} B saved before, {fwd_bytes} B after "
                     f"(inputs the backward reads: {old[1]} B before, {in_bytes} B after).")
    return "\n".join(lines) + "\n"


__all__ = ["SavedValue", "saved_bytes", "saved_input_bytes", "saved_nodes", "saved_report", "saved_values",
           "storage"]
