"""Triton code generation: one generator per kernel family, each a function
(kernel, value names, target) -> the text of a Python file holding a @triton.jit kernel
and the `launch(...)` function that calls it."""
from __future__ import annotations

from ops.errors import BackendError

from . import conv, horizontal, matmul, pointwise, reduction, rows, window
from .common import Target

GENERATORS = {
    "pointwise": pointwise.generate,
    "copy": pointwise.generate,
    "layout": pointwise.generate,      # pad and cat: pointwise with masked loads
    "source": pointwise.generate,      # iota and rand
    "horizontal": horizontal.generate, # independent pointwise kernels in one launch
    "reduction": reduction.generate,
    "rows": rows.generate,             # reductions fused with their pointwise neighbours
    "window": window.generate,
    "matmul": matmul.generate,
    "conv": conv.generate,
}


def generate(kernel, names, target):
    if kernel.family not in GENERATORS:
        raise BackendError(f"no Triton code generator for the {kernel.family} family yet (node "
                           f"{names[kernel.root]} = {kernel.root.op}); use backend='reference'",
                           op=kernel.root.op, source=kernel.root.source)
    return GENERATORS[kernel.family](kernel, names, target)


__all__ = ["Target", "generate", "GENERATORS"]
