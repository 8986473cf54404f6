"""The Triton matmul kernel (compiler/codegen/matmul.py) under the interpreter, against the
NumPy reference: 2-D and batched products, broadcast batch dims, transposed, sliced and
broadcast operands read through their strides (no copies), odd sizes, float32 and float64,
and the gradients of a linear layer, whose backward multiplies permuted operands."""
import ast

import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from compiler.codegen import Target, generate
from ops.errors import BackendError
from runtime.executors.triton import TritonExecutor
from tests.helpers import nonzero, rel_error, kernel_executor


def run_poisoned(f, *arrays):
    """Run f's kernels with NaN-filled outputs: an element a kernel forgets stays NaN."""
    graph = C.trace(f, *arrays)
    executor = kernel_executor(graph, Target(), poison=True)
    return executor, executor(list(arrays))


def check(f, *arrays, tol=1e-4):
    want = C.jit(f, backend="reference")(*arrays)
    executor, got = run_poisoned(f, *arrays)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert not np.isnan(g).any(), "an output element was never written"
        assert rel_error(g, w) < tol
    return executor


def families(executor):
    return [k.family for k in executor.schedule.kernels]


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (1, 3, 17), (17, 33, 1), (3, 1, 5), (33, 65, 17), (65, 17, 33),
                                   (16, 16, 16), (300, 600, 20)])
def test_2d_odd_sizes(rng, m, k, n):
    x, w = nonzero(rng, (m, k), dtype=np.float32), nonzero(rng, (k, n), dtype=np.float32)
    executor = check(lambda x, w: x @ w, x, w)
    assert families(executor) == ["matmul"]


@pytest.mark.parametrize("a_shape,b_shape", [((3, 5, 7), (3, 7, 4)), ((2, 3, 5, 7), (2, 3, 7, 4)),
                                             ((2, 1, 5, 7), (3, 7, 4)), ((1, 4, 3), (2, 3, 1)),
                                             ((2, 1, 1, 6), (1, 3, 6, 5))])
def test_batched_and_broadcast_batches(rng, a_shape, b_shape):
    a, b = nonzero(rng, a_shape, dtype=np.float32), nonzero(rng, b_shape, dtype=np.float32)
    executor = check(O.matmul, a, b)
    assert families(executor) == ["matmul"]          # broadcast batch dims are strides, not copies


def test_transposed_operands_are_not_copied(rng):
    x, w = nonzero(rng, (9, 6), dtype=np.float32), nonzero(rng, (5, 6), dtype=np.float32)
    y, a = nonzero(rng, (9, 4), dtype=np.float32), nonzero(rng, (2, 6, 3), dtype=np.float32)
    for f, args in [(lambda x, w: x @ w.T, (x, w)), (lambda x, y: x.T @ y, (x, y)),
                    (lambda a, b: a.mT @ b, (a, nonzero(rng, (2, 6, 5), dtype=np.float32))),
                    (lambda a, b: a @ b.mT, (a, nonzero(rng, (2, 7, 3), dtype=np.float32))),
                    (lambda w: w.T @ w, (w,)), (lambda x: x @ x.T, (x,))]:
        executor = check(f, *args)
        assert families(executor) == ["matmul"]
        assert "strides" in executor.sources[0]      # the kernel reads the transpose through its strides


def test_sliced_and_expanded_operands(rng):
    x, w = nonzero(rng, (11, 9), dtype=np.float32), nonzero(rng, (7, 5), dtype=np.float32)
    row, col = nonzero(rng, (1, 7), dtype=np.float32), nonzero(rng, (7, 1), dtype=np.float32)
    check(lambda x, w: x[1::2, 2:] @ w, x, w)                      # an offset and a stepped stride
    check(lambda r, w: r.expand(6, 7) @ w, row, w)                 # stride 0 along m
    check(lambda x, c: x[:, 2:] @ c.expand(7, 4), x, col)         # stride 0 along n
    check(lambda x: x[:3, :3] @ x[:3, :3], x)                     # one buffer, both operands


def test_one_dimensional_operands(rng):
    v, u = nonzero(rng, (7,), dtype=np.float32), nonzero(rng, (7,), dtype=np.float32)
    w, a = nonzero(rng, (7, 3), dtype=np.float32), nonzero(rng, (2, 5, 7), dtype=np.float32)
    for f, args in [(O.matmul, (v, w)), (O.matmul, (w.T.copy(), v)), (O.matmul, (v, u)), (O.matmul, (a, v)),
                    (O.matmul, (v, nonzero(rng, (2, 7, 4), dtype=np.float32)))]:
        check(f, *args)


def test_jit_matches_reference(rng):
    a, b = nonzero(rng, (2, 3, 17, 33), dtype=np.float32), nonzero(rng, (33, 5), dtype=np.float32)
    f = lambda a, b: O.matmul(a, b) * 2.0                         # noqa: E731
    assert rel_error(C.jit(f, backend="interpret")(a, b), C.jit(f, backend="reference")(a, b)) < 1e-4


def test_float64(rng):
    a, b = nonzero(rng, (3, 17, 33)), nonzero(rng, (3, 33, 9))
    executor = check(O.matmul, a, b, tol=1e-12)
    assert "tl.float64" in executor.sources[0] and "input_precision" not in executor.sources[0]
    check(lambda x, w: x @ w.T, nonzero(rng, (5, 6)), nonzero(rng, (3, 6)), tol=1e-12)
    check(O.matmul, nonzero(rng, (5, 6)), nonzero(rng, (6, 3), dtype=np.float32), tol=1e-12)   # mixed: widened


def test_linear_layer_gradients(rng):
    x, w, b = (nonzero(rng, s, dtype=np.float32) for s in [(13, 10), (7, 10), (7,)])
    t = nonzero(rng, (13, 7), dtype=np.float32)

    def loss(w, b, x, t):
        return O.mean((O.tanh(O.linear(x, w, b)) - t) ** 2)

    value, grads = C.value_and_grad(loss, argnums=(0, 1, 2), backend="interpret")(w, b, x, t)
    want_value, want_grads = C.value_and_grad(loss, argnums=(0, 1, 2), backend="reference")(w, b, x, t)
    assert rel_error(value, want_value) < 1e-4
    for g, wg in zip(grads, want_grads):
        assert g.shape == wg.shape and rel_error(g, wg) < 1e-4
    # and against torch autograd
    tw, tb, tx = (torch.tensor(v, requires_grad=True) for v in (w, b, x))
    torch.mean((torch.tanh(torch.nn.functional.linear(tx, tw, tb)) - torch.tensor(t)) ** 2).backward()
    for g, tg in zip(grads, (tw, tb, tx)):
        assert rel_error(g, tg.grad.numpy()) < 1e-4


def test_batched_gradients(rng):
    a, b = nonzero(rng, (2, 1, 5, 6), dtype=np.float32), nonzero(rng, (3, 6, 4), dtype=np.float32)
    f = lambda a, b: O.sum(O.matmul(a, b) ** 2)                   # noqa: E731
    _, grads = C.value_and_grad(f, argnums=(0, 1), backend="interpret")(a, b)
    _, want = C.value_and_grad(f, argnums=(0, 1), backend="reference")(a, b)
    for g, w in zip(grads, want):
        assert g.shape == w.shape and rel_error(g, w) < 1e-4


@pytest.mark.parametrize("blocks", [(16, 16, 16), (16, 32, 64), (32, 16, 16)])
def test_small_blocks_walk_tiles_and_k(rng, blocks):
    """Blocks smaller than the shapes: several tiles each way and several steps along k."""
    a, b = nonzero(rng, (2, 33, 65), dtype=np.float32), nonzero(rng, (2, 17, 65), dtype=np.float32)
    graph = C.trace(lambda a, b: a @ b.mT, a, b)
    executor = kernel_executor(graph, Target())
    (module,) = executor.modules
    out = torch.full((2, 33, 17), float("nan"))
    block_m, block_n, block_k = blocks
    module.launch(torch.from_numpy(a), torch.from_numpy(b), out, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    assert not torch.isnan(out).any()
    assert rel_error(out.numpy(), a @ b.transpose(0, 2, 1)) < 1e-4


def test_gpu_source_lists_configs_to_tune_with_gpu_launch_parameters(rng):
    graph = C.trace(lambda a, b: O.matmul(a, b.mT), O.spec((2, 300, 70)), O.spec((2, 40, 70)))
    executor = kernel_executor(graph, Target())
    (kernel,) = executor.schedule.kernels
    for target in [Target(device="cuda", interpret=False), Target(device="cuda", interpret=False, allow_tf32=True)]:
        text = generate(kernel, executor.names, target)
        ast.parse(text)
        assert "CONFIGS = [" in text and "num_warps=num_warps, num_stages=num_stages" in text.split("def launch")[1]
        assert f'input_precision="{"tf32" if target.allow_tf32 else "ieee"}"' in text
        assert '"BLOCK_N": 64' in text and '"BLOCK_N": 128' not in text     # tiles cut down to N = 40
    assert executor.sources[0] == generate(kernel, executor.names, Target(device="cuda", interpret=False))


def test_integer_matmul_is_refused():
    a = np.arange(1, 7, dtype=np.int32).reshape(2, 3)
    with pytest.raises(BackendError, match="float32 or float64"):
        C.jit(lambda a, b: a @ b, backend="interpret")(a, a.T.copy())
