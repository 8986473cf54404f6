"""The DSL misused: NumPy functions and Python control flow on traced tensors, tensor methods
given NumPy's keywords, and names the DSL does not have. Each error names what was called,
the DSL's way to say it, and the user's line (N is found with `_line`, the line of a marker
comment); arithmetic between NumPy arrays and traced tensors keeps working."""
import sys

import numpy as np
import pytest

import compiler as C
import ops as O
from ops import layers as L
from ops.errors import ArgumentError, TracedValueError
from tests.helpers import marked_line, nonzero, rel_error

HERE = "test_dsl.py"


def _line(marker):
    """The line number of the comment `# line: marker` in this file."""
    return marked_line(sys.modules[__name__], f"line: {marker}")


def _error(fn, *arrays, error=TracedValueError):
    with pytest.raises(error) as info:
        C.jit(fn, backend="reference")(*arrays)
    return str(info.value)


# -- NumPy functions on traced tensors -------------------------------------------------------------

def numpy_tanh(x, w):
    return np.tanh(x @ w)  # line: np.tanh


def numpy_mean(x):
    h = O.relu(x)
    return np.mean(h)  # line: np.mean


def numpy_concatenate(x):
    return np.concatenate([x, x])  # line: np.concatenate


def numpy_clip(x):
    return np.clip(x, 0.0, 1.0)  # line: np.clip


def numpy_dot(x):
    return np.dot(x, x)  # line: np.dot


def numpy_maximum(x):
    return np.maximum(x, 0.0)  # line: np.maximum


def numpy_sinh(x):
    return np.sinh(x)  # line: np.sinh


def numpy_add_reduce(x):
    return np.add.reduce(x)  # line: np.add.reduce


def numpy_in_place(x):
    a = np.ones(x.shape)
    a += x  # line: np.add(...,
    return a


def numpy_asarray(x):
    return np.asarray(x) * 2  # line: np.array


@pytest.mark.parametrize("fn, shapes, called, instead", [
    (numpy_tanh, [(3, 4), (4, 2)], "np.tanh", "use O.tanh"),
    (numpy_mean, [(5,)], "np.mean", "use O.mean"),
    (numpy_concatenate, [(5,)], "np.concatenate", "use O.cat"),
    (numpy_clip, [(5,)], "np.clip", "use O.clamp"),
    (numpy_dot, [(5,)], "np.dot", "use O.matmul or @"),
    (numpy_maximum, [(5,)], "np.maximum", "use O.maximum"),
    (numpy_sinh, [(5,)], "np.sinh", "no DSL equivalent: see the list of ops in docs/ops.md"),
    (numpy_add_reduce, [(5,)], "np.add.reduce", "no DSL equivalent"),
    (numpy_in_place, [(5,)], "np.add(..., out=array) (an in-place update such as a += x)", "write a = a + x"),
    (numpy_asarray, [(5,)], "np.array (or np.asarray)", "keep it a tensor"),
], ids=lambda v: v if isinstance(v, str) and v.startswith("np.") else None)
def test_a_numpy_function_on_a_traced_tensor_names_the_dsl_op_and_the_line(fn, shapes, called, instead, rng):
    message = _error(fn, *(nonzero(rng, s) for s in shapes))
    assert message.startswith(f"{called} was called on a traced tensor"), message
    assert instead in message
    assert f"at {HERE}:{_line(called.split(' ')[0])}" in message
    assert "iterating" not in message and "axis" not in message


def test_numpy_arrays_and_scalars_with_traced_tensors_are_still_arithmetic(rng):
    """`a OP x` with an array `a` reaches the Tensor through NumPy's ufunc protocol: it is the
    Tensor's own operator, as `x OP a` is."""
    a, b, m = nonzero(rng, (3,)), nonzero(rng, (3,)), nonzero(rng, (2, 3))
    cases = [
        (lambda x: a * x, a * b), (lambda x: x * a, b * a), (lambda x: a + x, a + b), (lambda x: a - x, a - b),
        (lambda x: a / x, a / b), (lambda x: np.abs(a) ** x, np.abs(a) ** b), (lambda x: m @ x, m @ b),
        (lambda x: np.float64(2.5) * x, 2.5 * b), (lambda x: np.multiply(a, x), a * b),
        (lambda x: O.where(a < x, x, a), np.where(a < b, b, a)),
        (lambda x: O.where(a >= x, 1.0, 0.0), (a >= b).astype(np.float64)),
        (lambda x: O.where(a == x, 1.0, 0.0) + O.where(a != x, 2.0, 0.0), np.full(3, 2.0)),
    ]
    for fn, want in cases:
        got = C.jit(fn, backend="reference")(b)
        assert got.shape == want.shape and rel_error(got, want) < 1e-15


def test_a_numpy_array_times_a_traced_tensor_has_a_gradient(rng):
    a, x = nonzero(rng, (4,)), nonzero(rng, (4,))
    grad = C.grad(lambda x: O.sum(a * x * x), backend="reference")(x)
    assert rel_error(grad, 2 * a * x) < 1e-15


# -- Python control flow on traced tensors ---------------------------------------------------------

def python_if(x):
    if O.sum(x) > 0:  # line: if
        return x
    return -x


def python_float(x):
    return x * float(O.mean(x))  # line: float


def python_int(x):
    return x * int(O.sum(x))  # line: int


def python_range(x):
    return [x for _ in range(O.sum(x))]  # line: range


def python_loop(x):
    total = 0.0
    for row in x:  # line: for
        total = total + row
    return total


def python_len(x):
    return x * len(O.sum(x))  # line: len


@pytest.mark.parametrize("fn, marker, words", [
    (python_if, "if", ["`if`", "O.where"]),
    (python_float, "float", ["float()"]),
    (python_int, "int", ["int()", "O.where"]),
    (python_range, "range", ["range()", "x.shape"]),
    (python_loop, "for", ["loop", "x[i]"]),
    (python_len, "len", ["len() of a 0-d tensor", "shape is ()"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_python_control_flow_on_a_traced_tensor_names_the_line(fn, marker, words, rng):
    message = _error(fn, nonzero(rng, (3, 2)))
    assert all(w in message for w in words), message
    assert f"at {HERE}:{_line(marker)}" in message


def test_errors_about_traced_values_are_argument_errors():
    """One class for all of them, still caught by `except TypeError` (a Python conversion's)."""
    assert issubclass(TracedValueError, ArgumentError) and issubclass(TracedValueError, TypeError)


# -- tensor methods given NumPy's keywords -----------------------------------------------------------

def method_axis(x):
    return x.sum(axis=0)  # line: axis


def method_keepdims(x):
    return x.mean(1, keepdims=True)  # line: keepdims


@pytest.mark.parametrize("fn, marker, words", [
    (method_axis, "axis", ["sum()", "'axis'", "did you mean dim=?"]),
    (method_keepdims, "keepdims", ["mean()", "'keepdims'", "did you mean keepdim=?"]),
], ids=["sum-axis", "mean-keepdims"])
def test_a_tensor_method_with_numpy_keywords_names_the_torch_keyword(fn, marker, words, rng):
    message = _error(fn, nonzero(rng, (3, 2)), error=ArgumentError)
    assert all(w in message for w in words), message
    assert f"at {HERE}:{_line(marker)}" in message


# -- names the DSL does not have --------------------------------------------------------------------

def test_an_unknown_op_names_the_closest_ones():
    with pytest.raises(AttributeError) as info:
        O.softmaxx  # line: softmaxx
    message = str(info.value)
    assert message.startswith("ops has no 'softmaxx'; did you mean softmax, log_softmax?"), message
    assert "docs/ops.md" in message and f"at {HERE}:{_line('softmaxx')}" in message


@pytest.mark.parametrize("module, name, words", [
    (O, "gleu", ["ops has no 'gleu'", "gelu"]),
    (O, "Dense", ["O.layers.Dense"]),
    (O, "Adam", ["O.optim.Adam"]),
    (L, "Dens", ["ops.layers has no 'Dens'", "Dense"]),
    (L, "Gelu", ["GELU"]),
    (O.optim, "Adamw", ["ops.optim has no 'Adamw'", "Adam"]),
    (O, "frobnicate", ["ops has no 'frobnicate' (all of them are listed in docs/ops.md)"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_unknown_names_in_ops_layers_and_optim(module, name, words):
    with pytest.raises(AttributeError) as info:
        getattr(module, name)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_unknown_names_still_behave_as_missing_attributes():
    """hasattr, getattr with a default and `from ops import submodule` are unchanged."""
    assert not hasattr(O, "softmaxx") and getattr(O, "softmaxx", None) is None
    assert not hasattr(L, "__wrapped__")
    from ops import evaluate  # noqa: F401  (a submodule: imported, not an unknown name)
    assert callable(O.gelu) and callable(O.softplus) and L.GELU
