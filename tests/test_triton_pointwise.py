"""Pointwise, reduction, layout and source kernels, generated and run under Triton's
interpreter, against the NumPy reference. Outputs are poisoned (NaN) before every launch,
so an element a kernel forgets to write shows up."""
import numpy as np
import pytest

import compiler as C
import ops as O
from compiler.codegen import Target
from runtime.executors.triton import TritonExecutor
from tests.helpers import assert_close, nonzero, positive, rel_error, run_both, kernel_executor


UNARY = [O.neg, O.exp, O.tanh, O.sigmoid, O.abs, O.relu, lambda x: O.leaky_relu(x, 0.1),
         lambda x: O.sqrt(O.abs(x)), lambda x: O.log(O.abs(x)), lambda x: x ** 2, lambda x: x ** 3,
         lambda x: O.abs(x) ** 0.5, lambda x: 2.0 ** x, lambda x: O.clamp(x, -0.5, 0.5),
         lambda x: O.to(x > 0, "float32"), lambda x: O.primitives.sign(x)]


@pytest.mark.parametrize("fn", UNARY, ids=range(len(UNARY)))
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 1, 3), ()])
def test_unary(rng, fn, shape):
    x = nonzero(rng, shape, dtype=np.float32)
    assert_close(*run_both(fn, x))


BINARY = [O.add, O.sub, O.mul, O.div, O.maximum, O.minimum, lambda a, b: O.where(a > b, a, b * 2),
          lambda a, b: O.abs(a) ** b, lambda a, b: a < b, lambda a, b: a >= b, lambda a, b: a != b]


@pytest.mark.parametrize("fn", BINARY, ids=range(len(BINARY)))
@pytest.mark.parametrize("shapes", [((4, 3), (4, 3)), ((4, 3), (3,)), ((2, 1, 5), (3, 1)), ((1,), (6, 2)),
                                    ((), (3, 2))])
def test_binary_with_broadcasting(rng, fn, shapes):
    a, b = (nonzero(rng, s, dtype=np.float32) for s in shapes)
    assert_close(*run_both(fn, a, b))


def test_strided_inputs_are_read_through_views_without_copies(rng):
    x = nonzero(rng, (5, 4), dtype=np.float32)
    y = nonzero(rng, (4, 5), dtype=np.float32)

    def f(x, y):
        return x.T * y, x[1:, ::2] + 1.0, O.permute(x.reshape(5, 2, 2), (2, 0, 1)) * 3.0

    want, got = run_both(f, x, y)
    assert_close(want, got)
    kernels = kernel_executor(C.trace(f, x, y), Target()).schedule.kernels
    assert [k.family for k in kernels] == ["pointwise"] * 3        # views cost no kernel


def test_reshape_of_a_strided_view_is_copied(rng):
    x = nonzero(rng, (3, 4), dtype=np.float32)
    want, got = run_both(lambda x: x.T.reshape(12) * 2.0, x)
    assert_close(want, got)
    families = [k.family for k in kernel_executor(C.trace(lambda x: x.T.reshape(12), x), Target()).schedule.kernels]
    assert families == ["copy"]


@pytest.mark.parametrize("dims,keepdim", [(None, False), (0, False), (1, True), ((0, 2), False), ((1, 2), True),
                                         (2, False)])
@pytest.mark.parametrize("op", ["sum", "amax", "mean", "argmax"])
def test_reductions(rng, op, dims, keepdim):
    x = nonzero(rng, (3, 5, 7), dtype=np.float32)
    if op == "argmax":
        if isinstance(dims, tuple):
            return
        fn = lambda x: O.argmax(x, dims, keepdim)  # noqa: E731
    else:
        fn = lambda x: getattr(O, op)(x, dims, keepdim)  # noqa: E731
    want, got = run_both(fn, x)
    if op in ("sum", "mean"):       # float32 sums in another order: errors scale with Σ|x|, not with |Σx|
        scale = getattr(np, op)(np.abs(x).astype(np.float64), axis=dims, keepdims=keepdim)
        assert not np.isnan(got[0]).any() and np.all(np.abs(got[0] - want[0]) <= 1e-6 * scale)
    else:
        assert_close(want, got)


def test_reductions_over_strided_views_and_ties(rng):
    x = np.round(nonzero(rng, (6, 9), dtype=np.float32))          # many ties
    assert_close(*run_both(lambda x: (O.argmax(x.T, 1), O.amax(x[::2], 0), O.sum(x.T, 0)), x))


def test_long_rows_use_the_looped_form(rng):
    x = nonzero(rng, (3, 40000), dtype=np.float32)
    kernel_text = C.compile(lambda x: O.sum(x, 1), x, backend="interpret").source()
    assert "for start in range(0, 40000, BLOCK_COLS)" in kernel_text
    assert_close(*run_both(lambda x: (O.sum(x, 1), O.amax(x, 1), O.argmax(x, 1)), x))


def test_integer_and_bool_reductions(rng):
    x = rng.integers(-5, 5, (4, 6))
    assert_close(*run_both(lambda x: (O.sum(x, 1), O.sum(x > 0, 0), O.amax(x, 1), O.argmax(x, 0)), x))


def test_pad_slice_and_cat(rng):
    x = nonzero(rng, (3, 4), dtype=np.float32)
    y = nonzero(rng, (3, 2), dtype=np.float32)

    def f(x, y):
        padded = O.primitives.pad(x, lo=(1, 0), hi=(0, 2), interior=(1, 0))
        return padded * 2.0, O.cat([x, y, x[:, :1]], 1), O.cat([x.T, y.T], 0), O.stack([x, x * 2], 1)

    assert_close(*run_both(f, x, y))


def test_iota_one_hot_and_cross_entropy_labels(rng):
    labels = rng.integers(0, 5, (7,))
    logits = nonzero(rng, (7, 5), dtype=np.float32)
    assert_close(*run_both(lambda z, y: (O.one_hot(y, 5), O.cross_entropy(z, y)), logits, labels))


def test_dropout_mask_matches_the_reference_bit_for_bit(rng):
    x = positive(rng, (33, 17), dtype=np.float32)
    seed = np.array(int(rng.integers(0, 2**31)))
    want, got = run_both(lambda x, s: O.dropout(x, 0.3, seed=s), x, seed)
    assert np.array_equal(want[0] == 0, got[0] == 0)
    assert_close(want, got)


def test_float64_stays_float64(rng):
    x = nonzero(rng, (4, 3))
    want, got = run_both(lambda x: (O.tanh(x) * 3.0, O.sum(x, 0)), x)
    assert got[0].dtype == np.float64
    assert max(rel_error(g, w) for g, w in zip(got, want)) < 1e-12


def test_gradients_through_generated_kernels(rng):
    x = nonzero(rng, (4, 6), dtype=np.float32)
    r = nonzero(rng, (4, 6), dtype=np.float32)

    def f(x, r):
        return O.sum(O.softmax(x, 1) * r) + O.sum(O.log_softmax(x, 0) * r) + O.mean(O.tanh(x) * O.sigmoid(r))

    want_value, want_grad = C.value_and_grad(f, backend="reference")(x, r)
    value, grad = C.value_and_grad(f, backend="interpret")(x, r)
    assert rel_error(value, want_value) < 1e-5 and rel_error(grad, want_grad) < 1e-4


def test_generated_source_reads_well(rng):
    x = nonzero(rng, (5, 3), dtype=np.float32)
    text = C.compile(lambda x: O.exp(x) * 2.0, x, backend="interpret").source()
    assert "t0 = tl.exp(x)" in text
    assert "@triton.jit" in text and "def launch(" in text
    assert "from test_triton_pointwise.py:" in text          # the user's line, in the kernel's header
    assert "# t1 = mul(t0, 2.0)" in text                     # every line says which node it computes


def test_inputs_named_like_kernel_variables(rng):
    """A graph input called mask, rows, n, c, x or k must not overwrite a kernel's own variables."""
    def f(mask, rows, n, c, x, k):
        return O.sum(O.conv2d(mask, rows) * 2.0) + O.sum(x * n) + O.sum(O.max_pool2d(mask, 2)) + O.sum(c @ k)

    arrays = [nonzero(rng, s, dtype=np.float32) for s in [(2, 3, 6, 6), (4, 3, 3, 3), (5,), (4, 4), (5,), (4, 2)]]
    argnums = tuple(range(6))
    want_value, want_grads = C.value_and_grad(f, argnums=argnums, backend="reference")(*arrays)
    value, grads = C.value_and_grad(f, argnums=argnums, backend="interpret")(*arrays)
    assert rel_error(value, want_value) < 1e-5
    for got, want in zip(grads, want_grads):
        assert rel_error(got, want) < 1e-4
