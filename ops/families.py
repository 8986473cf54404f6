"""Op families: what the passes need to know about groups of primitives, each fact in one table.

`ops.primitive` gives every primitive a kernel family (pointwise, reduction, layout, ...).
The tables here refine it with what fusion, lowering, rematerialization and the code
generators ask about an op: how a reduction starts and combines, which layout ops are only a
new way to read memory (views), which ops draw random numbers, which are window ops. A pass
asks `op in VIEW_OPS` instead of spelling the names again, and adding a primitive to a
family means adding it here (tests/test_families.py checks that none is missing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .primitive import CONV, MATMUL, POINTWISE


@dataclass(frozen=True)
class Reduction:
    """How one reduction starts and combines, in NumPy and in Triton.

    identity_of(dtype): the value an empty reduction starts from, which a masked-off lane
        contributes: 0 for a sum; for a max the lowest value of the dtype (-inf for floats).
    numpy: the ufunc that combines two partial results (its `.reduce` is the reduction).
    triton: the Triton function that reduces a block along an axis.
    accumulate: the Triton statement that adds one block's result into a running one.
    helper: the source lines of `triton` when it is not Triton's own (written into the
        kernel's file by the code generator), else ().

    NaN: a max, like NumPy's and torch's, is NaN when any element is, and an argmax points at
    the first NaN. Triton's tl.max and tl.argmax skip NaN, so both are helpers here.
    """

    name: str
    numpy: object
    triton: str
    accumulate: str | None
    helper: tuple = ()

    def identity_of(self, dtype):
        if self.numpy is np.add:
            return 0
        if dtype == "bool":
            return False
        if np.issubdtype(np.dtype(dtype), np.integer):
            return int(np.iinfo(dtype).min)
        return -math.inf


# Every primitive of the reduction family. argmax combines (value, index) pairs: its running
# step is written out by codegen/reduction.py (the first max wins a tie, as torch).
_MAX_WITH_NAN = (
    "@triton.jit",
    "def _maximum_with_nan(a, b):",
    "    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)",
    "",
    "",
    "@triton.jit",
    "def max_with_nan(x, axis: tl.constexpr):",
    "    # tl.max skips NaN; torch's max is NaN when any element is",
    "    return tl.reduce(x, axis, _maximum_with_nan)",
)

_ARGMAX_WITH_NAN = (
    "@triton.jit",
    "def _first_max(value1, index1, value2, index2):",
    "    # NaN is larger than anything; among equals (or NaNs) the lower index wins, as torch",
    "    nan1 = value1 != value1",
    "    nan2 = value2 != value2",
    "    equal = (value1 == value2) | (nan1 & nan2)",
    "    first = (value1 > value2) | (nan1 & ~nan2) | (equal & (index1 < index2))",
    "    return tl.where(first, value1, value2), tl.where(first, index1, index2)",
    "",
    "",
    "@triton.jit",
    "def argmax_with_nan(x, axis: tl.constexpr):",
    "    # (the max, its first index) along an axis of a 2-D block; tl.argmax skips NaN",
    "    index = tl.broadcast_to(tl.expand_dims(tl.arange(0, x.shape[axis]), 1 - axis), x.shape)",
    "    return tl.reduce((x, index), axis, _first_max)",
)

REDUCTIONS = {
    "reduce_sum": Reduction("reduce_sum", np.add, "tl.sum", "{acc} += {block}"),
    "reduce_max": Reduction("reduce_max", np.maximum, "max_with_nan",
                            "{acc} = tl.maximum({acc}, {block}, propagate_nan=tl.PropagateNan.ALL)", _MAX_WITH_NAN),
    "argmax": Reduction("argmax", np.maximum, "argmax_with_nan", None, _ARGMAX_WITH_NAN),
}

# The reductions a row kernel fuses with its pointwise neighbours (compiler/fusion.py).
ROW_REDUCTIONS = ("reduce_sum", "reduce_max")

# Layout ops that only change how memory is read (compiler/lower.py makes them views, no kernel).
VIEW_OPS = ("reshape", "permute", "expand", "slice")

# Ops that make values from nothing but their attributes (and a seed): each lane numbers its
# element over the op's own shape.
SOURCE_OPS = ("iota", "rand")

# Ops that draw random numbers: recomputing one needs the same seed and element numbering.
RANDOM_OPS = ("rand",)

# The window ops (pooling and the like): each reads a window of its input per output element.
WINDOW_OPS = ("window_argmax", "window_gather", "window_scatter", "window_sum", "window_sum_transpose")
WINDOW_FORWARD = ("window_sum", "window_argmax", "window_gather")      # read x at window positions
WINDOW_HEADS = ("window_scatter", "window_sum_transpose", "window_sum")   # one lane per output: take epilogues

# Kernel families, as fusion groups them.
POINTWISE_FAMILIES = (POINTWISE,)
GEMM_FAMILIES = (MATMUL, CONV)      # kernels that take pointwise consumers as an epilogue

__all__ = ["GEMM_FAMILIES", "POINTWISE_FAMILIES", "RANDOM_OPS", "REDUCTIONS", "ROW_REDUCTIONS", "Reduction",
           "SOURCE_OPS", "VIEW_OPS", "WINDOW_FORWARD", "WINDOW_HEADS", "WINDOW_OPS"]
