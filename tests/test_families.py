"""The op-family tables (ops/families.py): every member of a family has its entry, and the
entries agree with the primitives' own definitions."""
import numpy as np
import pytest

from compiler.codegen.pointwise import EXPRESSIONS
from ops import families
from ops.primitive import LAYOUT, POINTWISE, REDUCTION, REGISTRY, SOURCE, WINDOW


def members(family):
    return {name for name, p in REGISTRY.items() if p.family == family}


def test_every_reduction_has_its_table_entry():
    assert set(families.REDUCTIONS) == members(REDUCTION)
    assert set(families.ROW_REDUCTIONS) <= set(families.REDUCTIONS)


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_a_reduction_is_its_combine_from_its_identity(op, dtype):
    reduction = families.REDUCTIONS[op]
    x = np.random.default_rng(0).integers(-50, 50, (3, 5)).astype(dtype)
    assert reduction.numpy(reduction.identity_of(dtype), x[0, 0]) == x[0, 0]     # the identity changes nothing
    want = REGISTRY[op].impl(x, dims=(1,), keepdim=False)
    np.testing.assert_array_equal(reduction.numpy.reduce(x, axis=1), want)
    own = any(line.startswith(f"def {reduction.triton}(") for line in reduction.helper)   # a helper defines it
    assert reduction.triton.startswith("tl.") or own
    assert reduction.accumulate is None or "{acc}" in reduction.accumulate


def test_every_window_op_is_named_once_in_the_window_table():
    assert set(families.WINDOW_OPS) == members(WINDOW)
    assert set(families.WINDOW_FORWARD) <= set(families.WINDOW_OPS)
    assert set(families.WINDOW_HEADS) <= set(families.WINDOW_OPS)


def test_views_sources_and_random_ops():
    assert set(families.VIEW_OPS) <= members(LAYOUT)
    assert set(families.SOURCE_OPS) == members(SOURCE) - {"const"}
    assert set(families.RANDOM_OPS) <= set(families.SOURCE_OPS)
    assert all(not REGISTRY[op].differentiable for op in families.RANDOM_OPS)


def test_every_pointwise_primitive_has_a_triton_spelling():
    assert members(POINTWISE) <= set(EXPRESSIONS)
