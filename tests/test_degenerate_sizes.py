"""Every kernel family at degenerate sizes, forward and gradient, against torch.

Sizes where generated code goes wrong are the edges: a dimension of 1 (an index that is a
constant, not a block), primes (nothing divides), sizes just below, at and above a block
boundary (1023/1024/1025 for a GPU pointwise block, 4095/4096/4097 for a row held in one
block, fusion.ROW_LIMIT), and an empty batch (a grid or a reduction of length 0). Each case
is checked in float64 on the reference backend and in float32 through the Triton kernels
(`backend="interpret"`), values and the gradient of every input.
"""
import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from compiler.fusion import ROW_LIMIT
from ops.evaluate import run_graph
from tests.helpers import assert_close, kernel_executor, nonzero, rel_error

TF = torch.nn.functional
TOL = {"reference": 1e-10, "interpret": 2e-5}


def _check(ours, theirs, shapes, backend, rng):
    """ours/theirs on fresh inputs of `shapes`: the value of a random weighting of the output
    and the gradient of every input equal torch's."""
    dtype = np.float64 if backend == "reference" else np.float32
    xs = [nonzero(rng, s, dtype=dtype) for s in shapes]
    txs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = theirs(*txs)
    weights = nonzero(rng, tuple(out.shape))
    loss = (out * torch.tensor(weights)).sum()
    loss.backward()
    argnums = tuple(range(len(xs)))
    fn = C.value_and_grad(lambda *a: O.sum(ours(*a[:-1]) * a[-1]), argnums=argnums, backend=backend)
    value, grads = fn(*xs, weights.astype(dtype))
    tol = TOL[backend]
    assert rel_error(value, loss.item()) < tol * max(1, np.sqrt(out.numel()))
    for g, t in zip(grads, txs):
        assert np.shape(g) == tuple(t.shape)
        want = t.grad.numpy()
        assert np.all(np.isfinite(g)), "a gradient element was never written"
        assert rel_error(g, want) < tol


def _ln(x):
    return O.layer_norm(x, x.shape[-1:])


def _bn(x):
    return O.batch_norm(x, None, None, training=True)


# (name, ours, torch's, input shapes): sizes at the edges of each family's blocks. A
# normalization over 2 values is left out: its output is exactly ±1, so its gradient is
# rounding noise in float32.
ROWS = [1, 2, 7, 1023, 1024, 1025, ROW_LIMIT - 1, ROW_LIMIT, ROW_LIMIT + 1]
CASES = [
    *[(f"pointwise-{n}", lambda x: O.exp(x * 0.1) * x + 1, lambda x: torch.exp(x * 0.1) * x + 1, [(n,)])
      for n in (1, 13, 1023, 1024, 1025)],
    *[(f"broadcast-{m}x{n}", lambda x, y: x * y - y, lambda x, y: x * y - y, [(m, 1), (1, n)])
      for m, n in ((1, 1), (7, 1), (1, 13), (3, 1025))],
    *[(f"sum-rows-of-{n}", lambda x: O.sum(x, 1), lambda x: torch.sum(x, 1), [(3, n)]) for n in ROWS],
    ("sum-columns-of-1", lambda x: O.sum(x, 0), lambda x: torch.sum(x, 0), [(1, 5)]),
    ("mean-1x1", lambda x: O.mean(x, (0, 1), keepdim=True), lambda x: torch.mean(x, (0, 1), keepdim=True), [(1, 1)]),
    ("amax-rows-of-1", lambda x: O.amax(x, 1), lambda x: torch.amax(x, 1), [(5, 1)]),
    *[(f"softmax-{n}", lambda x: O.softmax(x, -1), lambda x: torch.softmax(x, -1), [(2, n)])
      for n in (1, 7, ROW_LIMIT - 1, ROW_LIMIT, ROW_LIMIT + 1)],
    *[(f"log_softmax-{n}", lambda x: O.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1), [(2, n)])
      for n in (1, 1025, ROW_LIMIT + 1)],
    *[(f"layer_norm-{n}", _ln, lambda x: TF.layer_norm(x, x.shape[-1:]), [(3, n)]) for n in (3, 7, ROW_LIMIT + 1)],
    *[(f"batch_norm-{s}", _bn, lambda x: TF.batch_norm(x, None, None, training=True), [s])
      for s in ((3, 1, 1, 1), (1, 2, 3, 1), (2, 3, 5, 7))],
    *[(f"matmul-{m}x{k}x{n}", lambda a, b: a @ b, lambda a, b: a @ b, [(m, k), (k, n)])
      for m, k, n in ((1, 1, 1), (1, 7, 1), (13, 1, 3), (17, 5, 19), (2, 33, 1))],
    ("matvec-1", lambda a, b: a @ b, lambda a, b: a @ b, [(1, 1), (1,)]),
    *[(f"conv2d-{s}-k{k}", lambda x, w, k=k: O.conv2d(x, w, padding=k // 2),
       lambda x, w, k=k: TF.conv2d(x, w, padding=k // 2),
       [s, (2, s[1], k, k)]) for s, k in (((1, 1, 1, 1), 1), ((1, 1, 1, 1), 3), ((2, 3, 5, 7), 3), ((1, 2, 13, 1), 1))],
    ("conv2d-strided-prime", lambda x, w: O.conv2d(x, w, stride=2, dilation=2),
     lambda x, w: TF.conv2d(x, w, stride=2, dilation=2), [(1, 1, 11, 7), (3, 1, 2, 2)]),
    *[(f"max_pool2d-{s}-k{k}", lambda x, k=k: O.max_pool2d(x, k), lambda x, k=k: TF.max_pool2d(x, k), [s])
      for s, k in (((1, 1, 1, 1), 1), ((1, 1, 7, 5), 2), ((2, 3, 5, 5), 5), ((1, 1, 13, 1), (3, 1)))],
    *[(f"avg_pool2d-{s}-k{k}", lambda x, k=k: O.avg_pool2d(x, k), lambda x, k=k: TF.avg_pool2d(x, k), [s])
      for s, k in (((1, 1, 1, 1), 1), ((1, 1, 7, 5), 2), ((1, 2, 3, 3), 3))],
    ("max_pool2d-padded-1x1", lambda x: O.max_pool2d(x, 3, 1, 1), lambda x: TF.max_pool2d(x, 3, 1, 1), [(1, 1, 1, 1)]),
    ("avg_pool2d-padded-1x1", lambda x: O.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
     lambda x: TF.avg_pool2d(x, 3, 1, 1, count_include_pad=False), [(1, 1, 1, 1)]),
    *[(f"adaptive_avg_pool2d-{s}-to-{o}", lambda x, o=o: O.adaptive_avg_pool2d(x, o),
       lambda x, o=o: TF.adaptive_avg_pool2d(x, o), [s]) for s, o in (((1, 1, 1, 1), 1), ((1, 2, 7, 5), 3),
                                                                       ((1, 1, 5, 5), 7))],
    ("cat-of-ones", lambda x, y: O.cat([x, y, x], 1), lambda x, y: torch.cat([x, y, x], 1), [(1, 1), (1, 1)]),
    ("cat-primes", lambda x, y: O.cat([x, y], 0), lambda x, y: torch.cat([x, y], 0), [(7, 3), (13, 3)]),
    ("slice-one", lambda x: x[:, 3:4] * 2, lambda x: x[:, 3:4] * 2, [(5, 7)]),
    ("slice-strided", lambda x: x[1::3, ::2].T + 1, lambda x: x[1::3, ::2].T + 1, [(7, 5)]),
    ("reshape-transpose-1", lambda x: O.transpose(x.reshape((1, 1)), 0, 1), lambda x: x.reshape(1, 1).T, [(1,)]),
]
# an empty batch: empty results, and zero gradients for the parameters, as torch
EMPTY = [
    ("conv2d-max_pool2d", lambda x, w: O.max_pool2d(O.conv2d(x, w), 2), lambda x, w: TF.max_pool2d(TF.conv2d(x, w), 2),
     [(0, 1, 5, 5), (2, 1, 3, 3)]),
    ("conv2d-bias-avg_pool2d", lambda x, w, b: O.avg_pool2d(O.conv2d(x, w, b, padding=1), 2),
     lambda x, w, b: TF.avg_pool2d(TF.conv2d(x, w, b, padding=1), 2), [(0, 2, 4, 4), (3, 2, 3, 3), (3,)]),
    ("linear", lambda x, w, b: O.relu(O.linear(x, w, b)), lambda x, w, b: torch.relu(TF.linear(x, w, b)),
     [(0, 3), (2, 3), (2,)]),
    ("matmul-over-nothing", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 0), (0, 3)]),
    ("softmax-rows", lambda x: O.softmax(x, -1), lambda x: torch.softmax(x, -1), [(0, 5)]),
    ("adaptive_avg_pool2d", lambda x: O.adaptive_avg_pool2d(x, 2), lambda x: TF.adaptive_avg_pool2d(x, 2),
     [(0, 1, 5, 5)]),
]
BACKENDS = ["reference", "interpret"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ours, theirs, shapes", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_degenerate_sizes_match_torch(ours, theirs, shapes, backend, rng):
    _check(ours, theirs, shapes, backend, rng)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ours, theirs, shapes", [pytest.param(*c[1:], id=c[0]) for c in EMPTY])
def test_an_empty_batch_matches_torch(ours, theirs, shapes, backend, rng):
    _check(ours, theirs, shapes, backend, rng)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output_size", [0, (0, 3), (2, 0)])
def test_adaptive_avg_pool2d_to_nothing_is_empty_as_in_torch(output_size, backend, rng):
    """torch returns an empty image for an output size of 0 (and cannot take its gradient)."""
    x = nonzero(rng, (2, 3, 5, 5), dtype=np.float32)
    got = C.jit(lambda x: O.adaptive_avg_pool2d(x, output_size), backend=backend)(x)
    assert got.shape == tuple(TF.adaptive_avg_pool2d(torch.tensor(x), output_size).shape)


def test_a_float64_constant_keeps_its_precision_in_the_kernels(rng):
    """Triton types a bare float literal float32: the backward of `sum(...) * 0.6` summed
    `tl.where(mask, 0.6, 0)` in float32 inside the float64 log_softmax kernel, off by 1e-7
    where torch's gradient is exactly 0 (found by tests/test_random_programs.py)."""
    x = nonzero(rng, (3, 2, 5))
    fn = C.value_and_grad(lambda x: O.sum(O.log_softmax(x, 1)) * 0.6 + O.sum(x * 0.0 + 0.1), backend="interpret")
    value, grad = fn(x)
    tx = torch.tensor(x, requires_grad=True)
    want = torch.sum(torch.log_softmax(tx, 1)) * 0.6 + torch.sum(tx * 0.0 + 0.1)
    want.backward()
    assert abs(value - want.item()) < 1e-12 * abs(want.item())
    assert np.abs(grad - tx.grad.numpy()).max() < 1e-14


@pytest.mark.parametrize("ours, shapes", [pytest.param(c[1], c[3], id=c[0]) for c in EMPTY])
def test_a_sum_over_an_empty_batch_is_written(ours, shapes, rng):
    """A kernel whose outputs are an empty tensor and a sum over it (0) must still run: the
    executor skipped every launch with an empty output, leaving the sum as whatever memory
    held (here NaN: the buffers are poisoned before each launch)."""
    xs = [nonzero(rng, s, dtype=np.float32) for s in shapes]
    joint = C.grad_graph(C.trace(lambda *a: O.sum(O.relu(ours(*a)) * 1.5), *xs), tuple(range(len(xs))))
    assert_close(run_graph(joint, xs), kernel_executor(joint, poison=True)(xs))
