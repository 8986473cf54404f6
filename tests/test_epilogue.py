"""Epilogues: bias, residual add and activation fused into the matmul or conv kernel that
produces their input, applied to the accumulator tile before the store. A fused kernel
gives the results of the unfused kernels and of the reference backend, stores only what is
needed outside it, and the zoo's training steps launch fewer kernels."""
import ast

import numpy as np
import pytest

import compiler as C
import ops as O
from compiler import fusion
from compiler.codegen import Target, generate
from compiler.codegen.common import kernel_names
from compiler.fusion import fuse
from compiler.lower import lower
from ops.printer import value_names
from ops import primitives as P
from runtime.training import zoo
from ops.evaluate import run_graph
from runtime.executors.triton import TritonExecutor
from tests.helpers import nonzero, rel_error, kernel_executor

CONV = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1)}


def check(fn, *arrays, tol=None):
    """Trace fn, run it fused and unfused (outputs poisoned with NaN before every launch) and on
    the reference backend; all three must agree. Returns the fused executor."""
    graph = C.trace(fn, *arrays)
    args = list(arrays)
    want = run_graph(graph, args)
    fused = kernel_executor(graph, Target(), poison=True, fuse=True)
    unfused = kernel_executor(graph, Target(), poison=True, fuse=False)
    tol = tol or (1e-10 if arrays[0].dtype == np.float64 else 1e-5)
    for got, plain, w in zip(fused(args), unfused(args), want):
        assert got.shape == w.shape and got.dtype == w.dtype
        if w.dtype.kind == "f":
            assert not np.isnan(got).any(), "an output element was never written (it is still poison)"
            assert rel_error(got, w) < tol and rel_error(got, plain) < tol
        else:
            assert np.array_equal(got, w) and np.array_equal(got, plain)
    return fused


def gemm_kernels(executor):
    return [k for k in executor.schedule.kernels if k.family in ("matmul", "conv")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_bias_relu_is_one_kernel(dtype, rng):
    x, w, b = (nonzero(rng, s, dtype=dtype) for s in [(9, 7), (5, 7), (5,)])
    ex = check(lambda x, w, b: O.relu(O.linear(x, w, b)), x, w, b)
    kernel, = ex.schedule.kernels
    assert kernel.family == "matmul" and kernel.nodes[0].op == "matmul" and kernel.label == "fwd_linear_relu"
    assert kernel.nodes[0] not in kernel.outputs                 # the accumulator itself is never stored
    source = ex.source()
    assert "epilogue: bias add, relu" in source and "acc + " in source


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_bias_relu_is_one_kernel(dtype, rng):
    x, w, b = nonzero(rng, (2, 3, 5, 6), dtype=dtype), nonzero(rng, (4, 3, 3, 3), dtype=dtype), \
        nonzero(rng, (4,), dtype=dtype)
    ex = check(lambda x, w, b: O.relu(O.conv2d(x, w, b, padding=1)), x, w, b)
    kernel, = ex.schedule.kernels
    assert kernel.family == "conv" and kernel.label == "fwd_conv2d_relu"
    assert "epilogue: bias add, relu" in ex.source()


def test_the_backward_convolutions_take_the_relu_mask_and_the_update(rng):
    """conv2d_grad_input feeds relu' (where(mask, g, 0)); conv2d_grad_weight feeds an SGD step."""
    x, w1, w2 = nonzero(rng, (2, 2, 5, 5)), nonzero(rng, (3, 2, 3, 3)), nonzero(rng, (4, 3, 3, 3))
    g, mask = nonzero(rng, (2, 4, 5, 5)), rng.random((2, 3, 5, 5)) > 0.5

    def backward(x, w1, w2, g, mask):
        dh = P.where(mask, P.conv2d_grad_input(g, w2, in_shape=(2, 3, 5, 5), **CONV), 0.0)    # relu'(h) * grad
        dw1 = P.conv2d_grad_weight(x, dh, weight_shape=w1.shape, **CONV)
        return dh, w1 - 0.1 * dw1                                                           # the update

    ex = check(backward, x, w1, w2, g, mask)
    assert [(k.nodes[0].op, len(k.nodes)) for k in ex.schedule.kernels] == [("conv2d_grad_input", 2),
                                                                            ("conv2d_grad_weight", 3)]
    assert all(k.nodes[0] not in k.outputs for k in ex.schedule.kernels)


def test_a_training_step_through_two_convs_fuses_the_relu_backward(rng):
    x, w1, w2 = nonzero(rng, (2, 1, 6, 6), dtype=np.float32), nonzero(rng, (3, 1, 3, 3), dtype=np.float32), \
        nonzero(rng, (2, 3, 3, 3), dtype=np.float32)
    y = nonzero(rng, (2, 2, 6, 6), dtype=np.float32)

    def loss(w1, w2, x, y):
        return O.sum(O.tanh(O.conv2d(O.relu(O.conv2d(x, w1, padding=1)), w2, padding=1)) * y)

    graph = C.simplify(C.grad_graph(C.trace(loss, w1, w2, x, y), (0, 1)))
    want = run_graph(graph, [w1, w2, x, y])
    ex = kernel_executor(graph, Target(), poison=True)
    assert "conv2d_grad_input" in [k.nodes[0].op for k in gemm_kernels(ex) if len(k.nodes) > 1]
    for got, w in zip(ex([w1, w2, x, y]), want):
        assert rel_error(got, w) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_plus_residual(dtype, rng):
    x, w = nonzero(rng, (6, 6), dtype=dtype), nonzero(rng, (6, 6), dtype=dtype)
    ex = check(lambda x, w: O.tanh(x @ w + x), x, w)              # x is an operand and the residual
    kernel, = ex.schedule.kernels
    assert [n.op for n in kernel.nodes] == ["matmul", "add", "tanh"]


def test_batched_matmul_with_a_broadcast_residual(rng):
    a, b = nonzero(rng, (2, 3, 5, 4), dtype=np.float32), nonzero(rng, (3, 4, 6), dtype=np.float32)
    r, s = nonzero(rng, (3, 1, 6), dtype=np.float32), nonzero(rng, (2, 1, 5, 1), dtype=np.float32)
    ex = check(lambda a, b, r, s: O.sigmoid((a @ b + r) * s), a, b, r, s)
    assert len(ex.schedule.kernels) == 1


@pytest.mark.parametrize("shape", [(5,), (1, 5), (4, 1), (), (4, 5)])
def test_bias_shapes_broadcast_into_the_tile(shape, rng):
    x, w, b = nonzero(rng, (4, 3), dtype=np.float32), nonzero(rng, (3, 5), dtype=np.float32), \
        nonzero(rng, shape, dtype=np.float32)
    ex = check(lambda x, w, b: O.relu(x @ w - b * 2.0), x, w, b)
    assert len(ex.schedule.kernels) == 1


@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), (5,), (1, 4, 5, 1), (2, 1, 1, 1)])
def test_conv_bias_shapes_broadcast_into_the_tile(shape, rng):
    x, w, b = nonzero(rng, (2, 3, 5, 5), dtype=np.float32), nonzero(rng, (4, 3, 3, 3), dtype=np.float32), \
        nonzero(rng, shape, dtype=np.float32)
    ex = check(lambda x, w, b: O.relu(O.conv2d(x, w, padding=1) + b), x, w, b)
    assert len(ex.schedule.kernels) == 1


def test_a_gemm_output_needed_elsewhere_is_stored_too(rng):
    x, w, b = nonzero(rng, (5, 4), dtype=np.float32), nonzero(rng, (4, 3), dtype=np.float32), \
        nonzero(rng, (3,), dtype=np.float32)

    def f(x, w, b):
        m = x @ w
        return O.relu(m + b), O.sum(m, 1), m                   # m: an output, and read by a reduction

    ex = check(f, x, w, b)
    kernel = gemm_kernels(ex)[0]
    assert kernel.outputs[0] is kernel.nodes[0] and len(kernel.nodes) > 1


def test_dropout_and_iota_in_an_epilogue_number_elements_like_the_reference(rng):
    x, w = nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (5, 7), dtype=np.float32)

    def f(x, w):
        h = O.dropout(O.relu(x @ w), 0.3, seed=11)
        return h + P.cast(P.iota(shape=(6, 7), dim=0, dtype="int32"), dtype="float32")

    ex = check(f, x, w)
    assert len(ex.schedule.kernels) == 1 and "tl.rand(" in ex.source()


def test_what_stays_apart_and_why(rng):
    x, w, v = nonzero(rng, (4, 4), dtype=np.float32), nonzero(rng, (4, 4), dtype=np.float32), \
        nonzero(rng, (4, 4), dtype=np.float32)

    def f(x, w, v):
        e = O.exp(x)
        return (e @ w) + (x @ v), O.softmax(x @ w, 1)          # a prologue, two GEMMs, a row kernel

    graph = C.trace(f, x, w, v)
    plan = fuse(graph)
    reasons = [r for _, _, r in plan.rejected]
    assert any("prologue" in r for r in reasons)
    assert any("one matmul or conv per kernel" in r for r in reasons)
    assert any("epilogue holds pointwise nodes only" in r for r in reasons)
    for group in plan.groups:
        assert sum(fusion._takes_epilogue(n) for n in group) <= 1
        assert not fusion._takes_epilogue(group[0]) or all(not fusion._takes_epilogue(n) for n in group[1:])
    check(f, x, w, v)


def test_the_gpu_source_is_valid_python_with_gpu_launch_parameters_and_an_epilogue(rng):
    def f(x, w, b, c, k):
        return O.relu(O.linear(x, w, b)), O.relu(O.conv2d(c, k, padding=1) + 1.0)

    graph = C.trace(f, O.spec((8, 6)), O.spec((5, 6)), O.spec((5,)), O.spec((2, 3, 4, 4)), O.spec((4, 3, 3, 3)))
    schedule = lower(graph, fuse(graph))
    names = kernel_names(value_names(graph))
    gpu = Target(device="cuda", interpret=False)
    sources = [generate(k, names, gpu) for k in schedule.kernels]
    assert len(sources) == 2
    for text in sources:
        ast.parse(text)
        assert "num_warps=num_warps" in text and "epilogue:" in text


def epilogues_off(monkeypatch):
    monkeypatch.setattr(fusion, "GEMM_FAMILIES", ())


@pytest.mark.parametrize("name", ["logreg", "mlp", "lenet", "resnet"])
def test_zoo_training_steps_launch_fewer_kernels(name, monkeypatch):
    model = zoo.ZOO[name]
    params = model.init(np.random.default_rng(0))
    graph = C.simplify(C.grad_graph(C.trace(model.loss, *model.specs(params, 64)), tuple(range(len(params)))))
    with_epilogues = lower(graph, fuse(graph)).kernels
    epilogues_off(monkeypatch)
    without = lower(graph, fuse(graph)).kernels
    if name in ("mlp", "lenet"):       # their hidden layers: bias and relu join the GEMM
        assert len(with_epilogues) < len(without)
    else:                              # every GEMM output feeds a reduction (batch norm, cross entropy)
        assert len(with_epilogues) <= len(without)


# -- bias gradients riding along the weight gradient's K loop ----------------------------------

def rider_kernels(executor):
    return [k for k in executor.schedule.kernels if fusion.riders(k.nodes)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sums_of_either_matmul_operand_ride_along_its_k_loop(dtype, rng):
    """Σ_k of A (one value per row) and Σ_k of B (one per column) come out of the matmul kernel
    that loads those tiles anyway; every element is stored once (the outputs are poisoned)."""
    a, b = nonzero(rng, (37, 19), dtype=dtype), nonzero(rng, (19, 23), dtype=dtype)
    fused = check(lambda a, b: (a @ b, O.sum(a, 1), O.sum(b, 0)), a, b)
    kernels = rider_kernels(fused)
    assert len(fused.schedule.kernels) == 1 and len(kernels) == 1 and len(fusion.riders(kernels[0].nodes)) == 2
    assert "rides along the K loop" in fused.sources[0]


def test_the_bias_gradients_of_linear_and_conv2d_ride_along_the_weight_gradients(rng):
    x = nonzero(rng, (5, 3, 6, 6), dtype=np.float64)
    w1, b1 = nonzero(rng, (4, 3, 3, 3), dtype=np.float64), nonzero(rng, (4,), dtype=np.float64)
    w2, b2 = nonzero(rng, (7, 4 * 36), dtype=np.float64) / 40, nonzero(rng, (7,), dtype=np.float64)

    def loss(w1, b1, w2, b2, x):        # (w2 scaled so that tanh is not saturated: gradients far from 0)
        h = O.relu(O.conv2d(x, w1, b1, padding=1))
        return O.sum(O.tanh(O.linear(h.reshape((5, -1)), w2, b2)))

    graph = C.simplify(C.grad_graph(C.trace(loss, w1, b1, w2, b2, x), (0, 1, 2, 3)))
    args = [w1, b1, w2, b2, x]
    executor = kernel_executor(graph, Target(), poison=True)
    labels = sorted(k.label for k in rider_kernels(executor))
    assert labels == ["bwd_conv2d_grad_weight_bias_grad", "bwd_matmul_bias_grad"]
    (linear,) = [k for k in rider_kernels(executor) if k.family == "matmul"]
    assert linear.nodes[0].inputs[0].op == "permute"      # dyᵀ @ h: the sum of dy rides along as A's rows
    for got, want in zip(executor(args), run_graph(graph, args)):
        assert rel_error(got, want) < 1e-10          # float64: the same sums, in another order


def test_a_sum_that_feeds_its_own_gemm_does_not_ride_along(rng):
    """s = Σ_k b feeds a, and a @ b would wait for s: riding along would be a cycle."""
    a, b = nonzero(rng, (6, 8), dtype=np.float64), nonzero(rng, (8, 8), dtype=np.float64)
    fused = check(lambda a, b: (a * O.sum(b, 0)) @ b, a, b)
    assert not rider_kernels(fused)
