"""Window kernels (the primitives behind pooling), generated and run under Triton's
interpreter, against the NumPy reference: each primitive alone over kernel / stride /
padding / dilation combinations, then max_pool2d, avg_pool2d and adaptive_avg_pool2d with
their gradients. Outputs are poisoned before every launch, so an element a kernel forgets to
write shows up."""
import numpy as np
import pytest

import compiler as C
import ops as O
from compiler.codegen import Target
from ops import primitives as P
from runtime.executors.triton import TritonExecutor
from tests.helpers import assert_close, nonzero, positive, rel_error, run_both, kernel_executor


def window(kernel_size, stride, padding, dilation):
    return dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)


def pooled_shape(shape, kernel_size, stride, padding, dilation):
    n, c, *size = shape
    return (n, c, *((s + 2 * p - d * (k - 1) - 1) // st + 1
                    for s, k, st, p, d in zip(size, kernel_size, stride, padding, dilation)))


# (input shape, kernel_size, stride, padding, dilation)
CASES = [
    ((2, 3, 6, 6), (2, 2), (2, 2), (0, 0), (1, 1)),    # the classic 2x2 pooling
    ((1, 2, 5, 7), (3, 3), (1, 1), (1, 1), (1, 1)),    # overlapping windows, odd sizes, padding
    ((2, 3, 7, 6), (3, 2), (2, 1), (1, 1), (1, 2)),    # non-square everything
    ((1, 1, 9, 8), (2, 3), (3, 2), (0, 1), (2, 1)),    # stride larger than the kernel: cells no window covers
    ((2, 2, 5, 5), (1, 1), (2, 2), (0, 0), (1, 1)),    # 1x1 windows
    ((1, 3, 9, 9), (3, 3), (2, 2), (1, 1), (2, 2)),    # dilated with padding
    ((2, 1, 4, 5), (4, 5), (1, 1), (0, 0), (1, 1)),    # one window covering the image: a 1x1 output
    ((3, 2, 1, 7), (1, 3), (1, 2), (0, 1), (1, 1)),    # a single row
    ((2, 2, 2, 5), (3, 3), (2, 2), (1, 1), (1, 1)),    # a single row of windows, reaching into the padding
    ((2, 3, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1)),    # 1x1 images
]
IDS = ["2x2s2", "3x3p1", "3x2s21p1d12", "2x3s32p01d21", "1x1s2", "3x3s2p1d2", "whole", "row", "out_row", "1x1"]


def data(rng, shape, kind):
    if kind == "ties":          # few distinct values: many windows hold their max twice
        return rng.choice(np.array([-1.5, -0.5, 0.5, 1.5], dtype=np.float32), shape)
    if kind == "negative":      # a padding cell read as 0 would win every max
        return -positive(rng, shape, dtype=np.float32)
    return nonzero(rng, shape, dtype=np.float32)


@pytest.mark.parametrize("kind", ["random", "ties", "negative"])
@pytest.mark.parametrize("shape, k, s, p, d", CASES, ids=IDS)
def test_forward_primitives(rng, shape, k, s, p, d, kind):
    x = data(rng, shape, kind)
    w = window(k, s, p, d)
    idx = rng.integers(0, k[0] * k[1], pooled_shape(shape, k, s, p, d))   # any offsets, padding cells too

    def f(x, idx):
        return P.window_argmax(x, **w), P.window_gather(x, P.window_argmax(x, **w), **w), \
            P.window_gather(x, idx, **w), P.window_sum(x, **w)

    assert_close(*run_both(f, x, idx))


@pytest.mark.parametrize("shape, k, s, p, d", CASES, ids=IDS)
def test_transposed_primitives(rng, shape, k, s, p, d):
    w = window(k, s, p, d)
    out_shape = pooled_shape(shape, k, s, p, d)
    g = nonzero(rng, out_shape, dtype=np.float32)
    idx = rng.integers(0, k[0] * k[1], out_shape)

    def f(g, idx):
        return P.window_scatter(g, idx, in_shape=shape, **w), P.window_sum_transpose(g, in_shape=shape, **w)

    assert_close(*run_both(f, g, idx))


def test_strided_and_broadcast_views_are_read_in_place(rng):
    """Inputs that are transposed, sliced with steps and offsets, and broadcast (stride 0)."""
    w = window((3, 2), (2, 1), (1, 1), (1, 1))
    big = nonzero(rng, (2, 3, 9, 11), dtype=np.float32)
    g_small = nonzero(rng, (2, 3, 1, 8), dtype=np.float32)
    idx_t = rng.integers(0, 6, (2, 3, 8, 4))

    def f(big, g_small, idx_t):
        x = O.transpose(big, 2, 3)[:, :, 1::2, 2:]          # [2, 3, 5, 7]: strides (297, 99, 2, 11), offset 23
        g = O.broadcast_to(g_small, (2, 3, 3, 8))           # stride 0 along the rows
        idx = O.transpose(idx_t, 2, 3)[:, :, 1:, :]         # [2, 3, 3, 8], transposed and offset
        return P.window_argmax(x, **w), P.window_sum(x, **w), P.window_gather(x, idx, **w), \
            P.window_scatter(g, idx, in_shape=(2, 3, 5, 7), **w), \
            P.window_sum_transpose(g, in_shape=(2, 3, 5, 7), **w)

    graph = C.trace(f, big, g_small, idx_t)
    schedule = kernel_executor(graph, Target()).schedule
    assert [k.family for k in schedule.kernels] == ["window"] * 5, "the views must not be copied"
    assert_close(*run_both(f, big, g_small, idx_t))


def test_values_named_like_kernel_variables(rng):
    """Graph inputs called best, c or mask must not clobber the kernel's own variables."""
    w = window((2, 2), (1, 1), (1, 1), (1, 1))
    best = nonzero(rng, (2, 3, 4, 5), dtype=np.float32)
    c = rng.integers(0, 4, (2, 3, 5, 6))
    mask = nonzero(rng, (2, 3, 5, 6), dtype=np.float32)

    def f(best, c, mask):
        return P.window_argmax(best, **w), P.window_sum(best, **w), P.window_gather(best, c, **w), \
            P.window_scatter(mask, c, in_shape=(2, 3, 4, 5), **w), \
            P.window_sum_transpose(mask, in_shape=(2, 3, 4, 5), **w)

    assert_close(*run_both(f, best, c, mask))


def test_integer_and_float64_inputs(rng):
    w = window((3, 3), (2, 1), (1, 1), (1, 1))
    xi = rng.integers(-3, 3, (2, 2, 5, 4)).astype(np.int32)        # ties, and values below the padding's 0
    xd = nonzero(rng, (2, 2, 5, 4))

    def f(xi, xd):
        return P.window_argmax(xi, **w), P.window_sum(xi, **w), P.window_argmax(xd, **w), P.window_sum(xd, **w)

    want, got = run_both(f, xi, xd)
    assert [g.dtype for g in got] == [np.int64, np.int32, np.int64, np.float64]
    assert_close(want, got, tol=1e-12)


def test_nan_wins_the_max_as_in_the_reference(rng):
    x = nonzero(rng, (1, 2, 4, 4), dtype=np.float32)
    x[0, 0, 1, 2] = x[0, 1, 3, 3] = np.nan
    w = window((2, 2), (1, 1), (0, 0), (1, 1))
    want, got = run_both(lambda x: P.window_argmax(x, **w), x)
    assert np.array_equal(got[0], want[0])


# -- the pooling functions, values and gradients -----------------------------------------------

POOLS = {
    "max2": lambda x: O.max_pool2d(x, 2),
    "max3s2p1": lambda x: O.max_pool2d(x, 3, stride=2, padding=1),
    "max32d2": lambda x: O.max_pool2d(x, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(1, 2)),
    "avg2": lambda x: O.avg_pool2d(x, 2),
    "avg3s2p1": lambda x: O.avg_pool2d(x, 3, stride=2, padding=1),
    "avg3s2p1_exclude_pad": lambda x: O.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
    "avg23p1_exclude_pad": lambda x: O.avg_pool2d(x, (2, 3), stride=(1, 2), padding=(1, 1), count_include_pad=False),
    "avg3_divisor": lambda x: O.avg_pool2d(x, 3, stride=1, padding=1, divisor_override=5),
    "adaptive_divisible": lambda x: O.adaptive_avg_pool2d(x, (3, 2)),
    "adaptive_uneven": lambda x: O.adaptive_avg_pool2d(x, (4, 3)),
    "adaptive_1x1": lambda x: O.adaptive_avg_pool2d(x, 1),
}


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("name", list(POOLS))
def test_pooling_values_and_gradients(rng, name, kind):
    pool = POOLS[name]
    x = data(rng, (2, 3, 6, 8), kind)
    want = C.jit(pool, backend="reference")(x)
    got = C.jit(pool, backend="interpret")(x)
    assert got.shape == want.shape and rel_error(got, want) < 1e-4
    weights = nonzero(rng, want.shape, dtype=np.float32)

    def loss(x, weights):
        return O.sum(pool(x) * weights)

    want_loss, (want_grad,) = C.value_and_grad(loss, argnums=(0,), backend="reference")(x, weights)
    got_loss, (got_grad,) = C.value_and_grad(loss, argnums=(0,), backend="interpret")(x, weights)
    assert rel_error(got_loss, want_loss) < 1e-4
    assert rel_error(got_grad, want_grad) < 1e-4


def test_pooling_layers_in_a_small_model(rng):
    """max then average pooling, stacked: the backward runs scatter and sum_transpose on
    gradients the other kernels computed."""
    x = nonzero(rng, (2, 2, 9, 7), dtype=np.float32)

    def loss(x):
        y = O.max_pool2d(x, 3, stride=2, padding=1)                # [2, 2, 5, 4]
        z = O.avg_pool2d(O.tanh(y), (2, 3), stride=1, padding=1)   # [2, 2, 6, 4]
        return O.sum(z * z)

    want_loss, (want_grad,) = C.value_and_grad(loss, argnums=(0,), backend="reference")(x)
    got_loss, (got_grad,) = C.value_and_grad(loss, argnums=(0,), backend="interpret")(x)
    assert rel_error(got_loss, want_loss) < 1e-4
    assert rel_error(got_grad, want_grad) < 1e-4


def test_source_lists_blocks_to_tune_on_a_gpu_and_one_for_the_interpreter():
    """The kernel lists blocks for the autotuner on a GPU and the interpreter's one block, in
    the same text for both targets."""
    w = window((3, 3), (2, 2), (1, 1), (1, 1))
    graph = C.trace(lambda x: P.window_sum(x, **w), np.ones((1, 2, 5, 5), np.float32))
    from compiler.codegen import generate
    from compiler.lower import lower
    from ops.printer import value_names

    kernel = lower(graph).kernels[0]
    gpu = generate(kernel, value_names(graph), Target(device="cuda", interpret=False))
    cpu = generate(kernel, value_names(graph), Target())
    assert gpu == cpu and "\nCONFIGS = [" in gpu and "INTERPRETER_CONFIGS = [" in gpu
    compile(gpu, "gpu_kernel.py", "exec")


@pytest.mark.parametrize("pool", ["max_pool2d", "avg_pool2d"])
def test_a_single_window_pools_and_routes_its_gradient(pool, rng):
    """One window: every index of the backward's loads is a constant, and the masked loads still
    need a pointer per lane (a regression: the kernel did not compile)."""
    x = nonzero(rng, (1, 1, 2, 2), dtype=np.float32)
    g = 3.0 + rng.random()
    got = C.grad(lambda x: O.sum(getattr(O, pool)(x, 2) * g), backend="interpret")(x)
    want = np.full_like(x, g / 4) if pool == "avg_pool2d" else (x == x.max()) * np.float32(g)
    assert rel_error(got, want) < 1e-6
