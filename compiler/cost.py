"""The fusion cost model: bytes a compiled step moves between the kernels and memory (DRAM).

A kernel keeps its intermediates in registers; what it costs in memory traffic is what it
loads and stores. Two numbers judge a schedule:

`dram_bytes(schedule)`: what the kernels of a lowered Schedule (compiler/lower.py) move.
    Each kernel reads each of its input values once (a row kernel whose rows are too long
    for registers once per pass over them), counting the distinct elements of the
    view it reads (a broadcast dimension reads one element; a transpose or a slice reads
    the elements it covers), and writes each of its outputs once, whole. Scalar constants
    are literals in the kernel's source: they cost nothing. Two input values that are views
    of one buffer count once each (the model does not look for overlap). `kernel_bytes`
    gives one kernel's (read, written); `Program.report()`'s `kernel_bytes` rows use it.

`min_dram_bytes(graph)`: the compulsory traffic of the step, whatever the schedule:
    - every graph input (data and parameters) that some node reads, read once;
    - every graph output written once;
    - every value the forward saves for the backward (compiler/saved.py) written once, by
      the forward, and read once, by the backward; a saved graph input (the data x that the
      weight gradient x^T @ dy reads, a weight that the input gradient reads) is not written
      but is read once more, by the backward: no kernel can both use it in the forward and
      in the backward, which must wait for the loss.
    Bytes are bytes of distinct memory: a view (reshape, permute, expand, slice) counts as
    the buffer it is a view of (`saved.storage`), and a buffer counts once however many
    outputs or saved values are views of it; a saved value that is also a graph output is
    written once. Graph outputs that are inputs, views of inputs or constants add nothing.

A schedule that fused every kernel boundary away except these would move exactly
`min_dram_bytes`; `dram_bytes / min_dram_bytes` says how far a schedule is from that.
(The bound assumes what a training step does: each input is read whole and each saved
value is stored by the forward and loaded by the backward. A program that reads only a
slice of an input, or a fused kernel that computes a saved value and its backward reader
together, can move less.)
"""
from __future__ import annotations

import numpy as np

from .codegen.rows import row_passes
from .lower import View
from .saved import saved_values, storage


def itemsize(dtype):
    return np.dtype(dtype).itemsize


def nbytes(node):
    return node.numel * itemsize(node.dtype)


def distinct_elements(view):
    """How many different elements a view reads (a broadcast dimension reads one)."""
    count = 1
    for size, stride in zip(view.shape, view.strides):
        count *= size if stride else 1
    return count


def kernel_bytes(kernel):
    """(bytes read, bytes written) by one Kernel: each input buffer once (the distinct elements
    of its views: a buffer read both as it is and transposed, as a GEMM operand and by the sum
    riding along it, is read once), each output whole."""
    views = {}
    for n, v in kernel.inputs.items():
        if isinstance(v, View):
            views.setdefault(v.base, {})[(v.offset, tuple(v.shape), tuple(v.strides))] = v
    passes = _passes_reading(kernel)
    reads = 0
    for base, distinct in views.items():
        elements = max(distinct_elements(v) for v in distinct.values())
        if elements < base.numel:           # parts of it (slices): each part once, at most the whole
            elements = min(base.numel, sum(distinct_elements(v) for v in distinct.values()))
        reads += elements * itemsize(base.dtype) * passes.get(base, 1)
    writes = sum(nbytes(n) for n in kernel.outputs)
    return reads, writes


def _passes_reading(kernel):
    """{buffer: passes that read it whole}: a row kernel in the looped form (codegen/rows.py)
    walks its rows once per level of reduction, loading again what varies along a row."""
    if kernel.family != "rows":
        return {}
    looped = row_passes(kernel)
    if looped is None:
        return {}
    shape, dims = kernel.space
    rows = 1
    for d, n in enumerate(shape):
        rows *= 1 if d in dims else n
    count = {}
    for accumulated, computed in looped[0]:
        read = {i for n in computed + accumulated for i in n.inputs}
        for base in {v.base for i, v in kernel.inputs.items() if i in read and isinstance(v, View)
                     and distinct_elements(v) > rows}:
            count[base] = count.get(base, 0) + 1
    return count


def dram_bytes(schedule):
    """Bytes all the kernels of a Schedule read and write (see the module docstring)."""
    return sum(sum(kernel_bytes(k)) for k in schedule.kernels)


def min_dram_bytes(graph):
    """The compulsory traffic of one run of `graph`: inputs read once, outputs written once,
    saved values written once and read once, in bytes of distinct memory (see the module
    docstring)."""
    return sum(compulsory(graph).values())


def compulsory(graph):
    """The parts of `min_dram_bytes`: {"inputs_read", "outputs_written", "saved_written",
    "saved_read"}, in bytes."""
    base_of = storage(graph)
    read = set()
    for node in graph.nodes:
        read.update(node.inputs)
    inputs = [n for n in graph.inputs if n in read]

    def computed(node):
        base = base_of.get(node, node)
        return base if base.op not in ("input", "const") else None

    values = saved_values(graph)
    saved = {computed(v.node) for v in values} - {None}
    saved_inputs = {base_of.get(v.node, v.node) for v in values} - saved
    saved_inputs = {b for b in saved_inputs if not b.is_scalar_const}
    outputs = {computed(o) for o in graph.outputs} - {None}
    return {"inputs_read": sum(nbytes(n) for n in inputs),
            "outputs_written": sum(nbytes(b) for b in outputs - saved),
            "saved_written": sum(nbytes(b) for b in saved),
            "saved_read": sum(nbytes(b) for b in saved | saved_inputs)}


__all__ = ["compulsory", "distinct_elements", "dram_bytes", "kernel_bytes", "min_dram_bytes"]
