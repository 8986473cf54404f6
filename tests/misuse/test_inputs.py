"""Misuse: inputs that enter a program wrong (issue 16, "inputs, labels and layers").

Class labels out of range, float labels, dtypes chainrule has no kernels for, a dtype that
differs in kind from the compiled one, and a program too big for the device's memory: each
is an error that names the value and the user's line, from every entry point, never a
silently wrong answer.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import compiler as C
import ops as O
from ops import layers as L
from ops.errors import ArgumentError, DTypeError
from ops.evaluate import run_graph
from tests.helpers import nonzero, rel_error

CLASSES = 10


def loss_fn(w, x, y):
    return O.cross_entropy(x @ w, y)  # the-loss-line


def nll_fn(w, x, y):
    return O.nll_loss(O.log_softmax(x @ w, 1), y)  # the-nll-line


def _line(marker):
    with open(__file__) as f:
        return next(i for i, text in enumerate(f, 1) if text.rstrip().endswith(f"# {marker}"))


def _inputs(rng, n=4):
    return nonzero(rng, (5, CLASSES)), nonzero(rng, (n, 5)), rng.integers(0, CLASSES, n)


# -- class labels out of range ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [12, -3, CLASSES])
@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_label_out_of_range_is_an_error_in_value_and_grad(rng, bad, backend):
    w, x, y = _inputs(rng)
    y[2] = bad
    with pytest.raises(ArgumentError) as err:
        C.value_and_grad(loss_fn, backend=backend)(w, x, y)
    message = str(err.value)
    assert message.startswith(f"cross_entropy: target y[2] = {bad} is out of bounds for {CLASSES} classes")
    assert f"test_inputs.py:{_line('the-loss-line')}" in message


def test_nll_loss_label_out_of_range(rng):
    w, x, y = _inputs(rng)
    y[3] = 11
    with pytest.raises(ArgumentError) as err:
        C.grad(nll_fn)(w, x, y)
    assert "nll_loss: target y[3] = 11 is out of bounds for 10 classes" in str(err.value)
    assert f"test_inputs.py:{_line('the-nll-line')}" in str(err.value)


def test_label_out_of_range_in_a_compiled_program(rng):
    w, x, y = _inputs(rng)
    program = C.compile(loss_fn, O.spec((5, CLASSES), "float64"), O.spec((4, 5), "float64"), O.spec((4,), "int64"))
    y[0], y[1] = 12, -3
    with pytest.raises(ArgumentError) as err:
        program(w, x, y)
    assert "target y[0] = 12 is out of bounds for 10 classes" in str(err.value)
    assert "(2 labels are out of range)" in str(err.value)


def test_label_position_through_a_reshape(rng):
    """Labels that are an input reshaped inside the function are checked on the input."""
    w, x = nonzero(rng, (5, CLASSES)), nonzero(rng, (4, 5))
    y = rng.integers(0, CLASSES, (2, 2))
    y[1, 0] = 42
    with pytest.raises(ArgumentError) as err:
        C.value_and_grad(lambda w, x, y: O.cross_entropy(x @ w, O.reshape(y, (4,))))(w, x, y)
    assert "target y[1, 0] = 42 is out of bounds" in str(err.value)


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_label_out_of_range_in_a_train_step_changes_nothing(rng, backend):
    model = L.Sequential([L.Dense(8, CLASSES)], input_shape=(8,)).init(int(rng.integers(1 << 30)))
    step = C.compile_train_step(model, O.cross_entropy, O.optim.SGD(0.1), O.spec((16, 8)), O.spec((16,), "int64"),
                                backend=backend)
    x = nonzero(rng, (16, 8)).astype(np.float32)
    y = rng.integers(0, CLASSES, 16)
    before = step.params
    y[5] = 12
    with pytest.raises(ArgumentError) as err:
        step(x, y)
    assert "cross_entropy: target y[5] = 12 is out of bounds for 10 classes" in str(err.value)
    assert "test_inputs.py:" in str(err.value)          # the line that compiled the step
    assert all(np.array_equal(a, b) for a, b in zip(before, step.params)) and step.steps == 0


def test_the_reference_evaluator_checks_labels_too(rng):
    w, x, y = _inputs(rng)
    graph = C.trace(loss_fn, w, x, y)
    y[1] = -3
    with pytest.raises(ArgumentError, match=r"target y\[1\] = -3 is out of bounds for 10 classes"):
        run_graph(graph, [w, x, y])


def test_computed_labels_are_checked_by_the_reference_evaluator(rng):
    """Labels computed inside the function: the reference evaluator of the traced graph checks them."""
    w, x, y = _inputs(rng)
    y[:] = 7
    graph = C.trace(lambda w, x, y: O.cross_entropy(x @ w, y + 5), w, x, y)
    with pytest.raises(ArgumentError, match=r"the target\[0\] = 12 is out of bounds for 10 classes"):
        run_graph(graph, [w, x, y])


def test_constant_labels_are_checked_when_traced(rng):
    w, x, _ = _inputs(rng)
    with pytest.raises(ArgumentError, match=r"the constant target\[3\] = 10 is out of bounds"):
        C.trace(lambda w, x: O.cross_entropy(x @ w, np.array([1, 2, 3, 10])), w, x)


# -- ignore_index: the one legal exception, as torch -------------------------------------------------------------

IGNORE_CASES = [dict(), dict(reduction="sum"), dict(reduction="none"), dict(weight=True), dict(ignore_index=3),
                dict(ignore_index=3, weight=True), dict(label_smoothing=0.1), dict(ignore_index=-1, reduction="none"),
                dict(label_smoothing=0.2, weight=True, ignore_index=-7)]


@pytest.mark.parametrize("options", IGNORE_CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("backend, dtype, tol", [("reference", np.float64, 1e-10), ("interpret", np.float32, 1e-4)])
def test_ignore_index_is_left_out_of_the_sum_and_of_the_mean(rng, options, backend, dtype, tol):
    options = dict(options)
    use_weight = options.pop("weight", False)
    ignore = options.get("ignore_index", -100)
    logits, y = nonzero(rng, (6, CLASSES), dtype=dtype) * 2, rng.integers(0, CLASSES, 6)
    y[[1, 4]] = ignore
    y[0] = (ignore + 1) % CLASSES if 0 <= ignore < CLASSES else y[0]
    weight = rng.uniform(0.5, 2.0, CLASSES).astype(dtype) if use_weight else None

    def f(logits, y, *weight):
        return O.cross_entropy(logits, y, *weight, **options)

    args = (logits, y) + ((weight,) if use_weight else ())
    got = C.jit(f, backend=backend)(*args)
    grad = C.grad(lambda logits, y, *w: O.sum(f(logits, y, *w)), backend=backend)(*args)
    t_logits = torch.tensor(logits, requires_grad=True)
    want = F.cross_entropy(t_logits, torch.tensor(y), None if weight is None else torch.tensor(weight), **options)
    want.sum().backward()
    assert rel_error(got, want.detach().numpy()) < tol
    assert rel_error(grad, t_logits.grad.numpy()) < tol


def test_nll_loss_matches_torch_with_ignore_index(rng):
    logp, y = np.log(rng.dirichlet(np.ones(CLASSES), 5)), rng.integers(0, CLASSES, 5)
    y[2] = 4
    got = C.jit(lambda p, y: O.nll_loss(p, y, ignore_index=4))(logp, y)
    assert rel_error(got, F.nll_loss(torch.tensor(logp), torch.tensor(y), ignore_index=4).numpy()) < 1e-12


# -- float labels are a dtype error -------------------------------------------------------------------------------

def test_float_labels_in_value_and_grad_are_a_dtype_error(rng):
    w, x, _ = _inputs(rng)
    with pytest.raises(DTypeError) as err:
        C.value_and_grad(loss_fn)(w, x, np.full(4, 2.7))
    assert "target must hold integer class indices (int64), got float64 of shape (4,)" in str(err.value)
    assert f"test_inputs.py:{_line('the-loss-line')}" in str(err.value)


def test_bool_labels_are_a_dtype_error(rng):
    w, x, _ = _inputs(rng)
    with pytest.raises(DTypeError, match=r"target must hold integer class indices \(int64\), got bool of shape"):
        C.jit(loss_fn)(w, x, np.array([True, False, True, True]))


def test_float_labels_in_a_train_step_are_a_dtype_error(rng):
    model = L.Sequential([L.Dense(8, CLASSES)], input_shape=(8,)).init(int(rng.integers(1 << 30)))
    step = C.compile_train_step(model, O.cross_entropy, O.optim.SGD(0.1), O.spec((16, 8)), O.spec((16,), "int64"))
    with pytest.raises(DTypeError) as err:
        step(nonzero(rng, (16, 8)), np.full(16, 2.7))           # the-float-labels-line
    assert "argument y of train_step has dtype float64, but the program was compiled for int64" in str(err.value)
    assert f"test_inputs.py:{_line('the-float-labels-line')}" in str(err.value)
    assert step.steps == 0


def test_a_compiled_program_never_truncates_float_labels(rng):
    w, x, _ = _inputs(rng)
    program = C.compile(loss_fn, O.spec((5, CLASSES)), O.spec((4, 5)), O.spec((4,), "int64"))
    with pytest.raises(DTypeError, match="argument y of loss_fn has dtype float64, but the program was compiled "
                                         "for int64"):
        program(w, x, np.array([0.5, 1.9, 2.2, 0.1]))


# -- dtypes: unsupported ones are named, kinds never converted ----------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.uint8, np.int16, np.complex64])
@pytest.mark.parametrize("entry", ["value_and_grad", "jit", "trace"])
def test_unsupported_dtype_is_an_error_naming_the_argument(rng, dtype, entry):
    w, x, y = _inputs(rng)
    w = w.astype(dtype)
    call = {"value_and_grad": lambda: C.value_and_grad(loss_fn)(w, x, y),
            "jit": lambda: C.jit(loss_fn)(w, x, y),
            "trace": lambda: C.trace(loss_fn, w, x, y)}[entry]
    with pytest.raises(DTypeError) as err:
        call()
    message = str(err.value)
    assert f"argument w of loss_fn has dtype {np.dtype(dtype).name}, which chainrule does not support" in message
    assert "\n  at test_inputs.py:" in message and f"C.{entry}(loss_fn" in message     # the line that passed it


def test_a_bfloat16_torch_tensor_is_a_dtype_error():
    with pytest.raises(DTypeError, match="a torch tensor of dtype torch.bfloat16, which chainrule does not support"):
        C.jit(lambda x: O.sum(x))(torch.ones(3, dtype=torch.bfloat16))


@pytest.mark.parametrize("given", ["int64", "bool"])
def test_a_float_input_given_another_kind_is_an_error(rng, given):
    program = C.compile(lambda x: O.sum(x * x), O.spec((3, 4)))
    with pytest.raises(DTypeError, match=f"argument x of f has dtype {given}, but the program was compiled for "
                                         "float32"):
        program(rng.integers(1, 5, (3, 4)).astype(given))


def test_int64_labels_that_do_not_fit_int32_are_an_error(rng):
    program = C.compile(lambda y: O.sum(y), O.spec((3,), "int32"))
    with pytest.raises(DTypeError, match="int64 values that do not fit the program's int32"):
        program(np.array([1, 2, 2**40]))


def test_float64_into_a_float32_program_is_rounded_to_float32_and_says_so_once(rng):
    """A float of another width is converted to the compiled one, with a warning the first time
    (documented in Program.run): never a silent conversion."""
    x = nonzero(rng, (3, 4))
    program = C.compile(lambda x: x * 3.0, O.spec((3, 4)))
    with pytest.warns(UserWarning, match=r"argument x is float64, but the program was compiled for float32"):
        out = program(x)
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32) * np.float32(3.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program(x)                                    # said once per argument


# -- a program too big for the device ----------------------------------------------------------------------------

N = 2 ** 20


def outer(x):
    return O.sum(O.exp(O.reshape(x, (N, 1)) * O.reshape(x, (1, N))), 1)  # the-huge-line


def test_a_huge_intermediate_names_its_op_and_line(rng):
    """A 4 TiB intermediate on the Triton backend: an error before anything is allocated."""
    from runtime.executors.triton import DeviceMemoryError

    with pytest.raises(DeviceMemoryError) as err:
        C.jit(outer, backend="interpret")(nonzero(rng, (N,), dtype=np.float32))
    message = str(err.value)
    assert "this program needs 4.0 TiB" in message and "float32[1048576, 1048576] (4.0 TiB)" in message
    assert message.startswith(("exp:", "mul:"))
    assert f"test_inputs.py:{_line('the-huge-line')}" in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")
def test_a_huge_intermediate_on_the_gpu_is_checked_against_its_free_memory(rng):
    from runtime.executors.triton import DeviceMemoryError

    with pytest.raises(DeviceMemoryError) as err:
        C.jit(outer, backend="triton")(nonzero(rng, (N,), dtype=np.float32))
    assert "of cuda memory" in str(err.value) and f"test_inputs.py:{_line('the-huge-line')}" in str(err.value)


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_one_hot_refuses_a_class_out_of_range_as_torch_does(backend, rng):
    labels = rng.integers(0, 4, 6)
    labels[3] = 4
    f = lambda y: O.sum(O.one_hot(y, 4) * 1.0)       # noqa: E731
    with pytest.raises(ArgumentError) as err:
        C.jit(f, backend=backend)(labels)
    assert "y[3] = 4 is out of bounds for 4 classes" in str(err.value) and "ignore_index" not in str(err.value)
    with pytest.raises(RuntimeError):
        F.one_hot(torch.from_numpy(labels), 4)
    assert C.jit(f, backend=backend)(labels % 4) == 6.0
