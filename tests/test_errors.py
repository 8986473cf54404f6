"""Bad input gets an error that names the op, the shapes or values, and the user's own line.

Each message is pinned: the model functions live in this file, so the `at test_errors.py:N`
part is checked too (N is found with `_line`, the line of a marker comment).
"""
import inspect
import sys

import numpy as np
import pytest

import compiler as C
import ops as O
from ops.errors import ArgumentError, BackendError, ChainruleError, DTypeError, GradientError, ShapeError
from tests.helpers import marked_line

HERE = "test_errors.py"


def _line(marker):
    """The line number of the line in this file that ends with `# <marker>`."""
    return marked_line(sys.modules[__name__], marker)


def _raises(error_type, fn, *args, backend="reference", **kwargs):
    with pytest.raises(error_type) as info:
        fn(*args)
    return str(info.value)


def matmul_mismatch(w, x):
    return O.sum(x @ w)  # matmul-mismatch


def non_scalar(w, x):
    return x @ w  # non-scalar


def int_input(w, labels):
    return O.sum(w * labels)


def axis_keyword(x):
    return O.sum(x, axis=1)  # axis-keyword


def bad_broadcast(a, b):
    return O.sum(a + b)  # bad-broadcast


def float_labels(logits, labels):
    return O.cross_entropy(logits, labels)  # float-labels


def conv_channels(x, w):
    return O.sum(O.conv2d(x, w))  # conv-channels


def python_if(x):
    if x > 0:  # python-if
        return x
    return -x


def where_not_bool(x):
    return O.where(x, x, 0.0)  # where-not-bool


def reshape_bad(x):
    return O.sum(x.reshape(5, 5))  # reshape-bad


def test_shape_mismatch_names_op_shapes_and_line(rng):
    message = _raises(ShapeError, C.grad(matmul_mismatch, backend="reference"),
                      rng.standard_normal((2, 3)), rng.standard_normal((4, 3)))
    assert message == (
        "matmul: shapes (4, 3) and (2, 3) do not fit: the inner dimensions 3 and 2 differ\n"
        f"  at {HERE}:{_line('matmul-mismatch')}:  return O.sum(x @ w)  # matmul-mismatch")


def test_broadcast_mismatch(rng):
    message = _raises(ShapeError, C.jit(bad_broadcast, backend="reference"),
                      rng.standard_normal((3, 4)), rng.standard_normal((5,)))
    assert message.startswith("add: shapes (3, 4) and (5,) cannot be broadcast together: dimension -1 has "
                              "sizes 4 and 5\n")
    assert f"at {HERE}:{_line('bad-broadcast')}" in message


def test_grad_of_non_scalar_output(rng):
    message = _raises(GradientError, C.grad(non_scalar, backend="reference"),
                      rng.standard_normal((3, 2)), rng.standard_normal((4, 3)))
    assert message.startswith("grad: the output must be a scalar to take a gradient, but non_scalar returns "
                              "f64[4,2]; reduce it (O.sum, O.mean) or use a loss\n")
    assert f"at {HERE}:{_line('non-scalar')}" in message


def test_grad_with_respect_to_integer_input(rng):
    message = _raises(GradientError, C.grad(int_input, argnums=1, backend="reference"),
                      rng.standard_normal(3), np.array([1, 2, 3]))
    assert message.startswith("grad: argument 1 (labels) is int64: integers have no gradient, so it cannot "
                              "be in argnums\n")
    assert f"at {HERE}:{inspect.getsourcelines(int_input)[1]}" in message


def test_wrong_number_of_arguments(rng):
    grad = C.grad(matmul_mismatch, backend="reference")
    message = _raises(ArgumentError, lambda: grad(rng.standard_normal((3, 2))))  # wrong-count
    assert message == ("matmul_mismatch() takes 2 arguments (w, x) but 1 was given\n"
                       f"  at {HERE}:{_line('wrong-count')}:  "
                       "message = _raises(ArgumentError, lambda: grad(rng.standard_normal((3, 2))))  # wrong-count")
    message = _raises(ArgumentError, lambda: C.trace(matmul_mismatch, O.spec((2, 3)), O.spec((3,)),
                                                     O.spec((1,))))
    assert message.startswith("matmul_mismatch() takes 2 arguments (w, x) but 3 were given\n")


def test_unknown_keyword_suggests_torch_name(rng):
    message = _raises(ArgumentError, C.jit(axis_keyword, backend="reference"), rng.standard_normal((2, 3)))
    assert message == (
        "sum() got an unexpected keyword argument 'axis' (did you mean dim=?); its signature is "
        "sum(input, dim=None, keepdim=False, *, dtype=None)\n"
        f"  at {HERE}:{_line('axis-keyword')}:  return O.sum(x, axis=1)  # axis-keyword")


def test_float_labels_for_cross_entropy(rng):
    """Float labels of the class-index shape are a dtype mistake, not a shape one."""
    message = _raises(DTypeError, C.jit(float_labels, backend="reference"),
                      rng.standard_normal((4, 3)), rng.standard_normal(4))
    assert message.startswith("cross_entropy: target must hold integer class indices (int64), got float64 of "
                              "shape (4,); float targets are class probabilities, of the input's shape (4, 3)\n")
    assert f"at {HERE}:{_line('float-labels')}" in message


def test_conv_channel_mismatch(rng):
    message = _raises(ShapeError, C.jit(conv_channels, backend="reference"),
                      rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 2, 3, 3)))
    assert message.startswith("conv2d: the input (2, 3, 8, 8) has 3 channels but the weight (4, 2, 3, 3) "
                              "expects 2\n")
    assert f"at {HERE}:{_line('conv-channels')}" in message


def test_python_control_flow_on_traced_tensor(rng):
    message = _raises(ChainruleError, C.jit(python_if, backend="reference"), rng.standard_normal(3))
    assert message.startswith("a traced tensor has no value yet, so Python `if`/`and`/`or` cannot look at it")
    assert f"at {HERE}:{_line('python-if')}" in message


def test_where_needs_a_bool_condition(rng):
    message = _raises(DTypeError, C.jit(where_not_bool, backend="reference"), rng.standard_normal(3))
    assert message.startswith("where: the condition must be a bool tensor (a comparison), got float64\n")
    assert f"at {HERE}:{_line('where-not-bool')}" in message


def test_reshape_element_count(rng):
    message = _raises(ShapeError, C.jit(reshape_bad, backend="reference"), rng.standard_normal((4, 6)))
    assert message.startswith("reshape: cannot reshape (4, 6) (24 elements) into (5, 5) (25 elements)\n")
    assert f"at {HERE}:{_line('reshape-bad')}" in message


def test_unknown_backend_and_missing_backend(rng, monkeypatch):
    def f(x):
        return O.sum(x * x)

    message = _raises(BackendError, C.jit(f, backend="cuda"), rng.standard_normal(3))
    assert message == "unknown backend 'cuda'; choose one of triton, interpret, reference (or set CHAINRULE_BACKEND)"
    monkeypatch.delenv("CHAINRULE_BACKEND", raising=False)
    x = rng.standard_normal(3)
    assert C.jit(f)(x) == pytest.approx(float(np.sum(x * x)))      # the default: Triton (here: its interpreter)


def test_shape_change_after_compile_recompiles_but_wrong_program_call_errors(rng):
    def f(x):
        return O.sum(x * x)

    program = C.compile(f, O.spec((3,), "float64"), backend="reference")
    message = _raises(ArgumentError, program, rng.standard_normal(4))
    assert message.startswith("argument x has shape (4,) but this program was compiled for (3,)")
