"""Row kernels whose rows are too long for registers (longer than fusion.ROW_LIMIT) walk each
row in blocks, once per level of reduction (codegen/rows.py, the looped form): batch norm on
a CIFAR-sized batch, layer norm over 20000 features, softmax over 17000 classes stay one
kernel each way instead of a dozen. The shapes are longer than the interpreter's block
(16384 columns), so every pass walks more than one block. Values and gradients against torch, every output
element written (outputs poisoned first), and the cost model counting each pass."""
import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from compiler.codegen.rows import row_passes
from compiler.cost import kernel_bytes
from compiler.fusion import ROW_LIMIT
from tests.helpers import assert_close, nonzero, rel_error, run_both


def _torch_grads(fn, arrays):
    leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    value = fn(*leaves)
    value.backward()
    return value.item(), [leaf.grad.numpy() for leaf in leaves]


CASES = {
    "batch_norm": (lambda x, g, b: O.sum(O.relu(O.batch_norm(x, None, None, weight=g, bias=b, training=True)) * x),
                   lambda x, g, b: (torch.relu(torch.nn.functional.batch_norm(x, None, None, g, b, training=True))
                                    * x).sum(),
                   [(4, 3, 72, 72), (3,), (3,)]),
    "layer_norm": (lambda x, g, b: O.sum(O.tanh(O.layer_norm(x, (20000,), weight=g, bias=b)) * x),
                   lambda x, g, b: (torch.tanh(torch.nn.functional.layer_norm(x, (20000,), g, b)) * x).sum(),
                   [(2, 20000), (20000,), (20000,)]),
    "softmax": (lambda x, w: O.sum(O.softmax(x * 3.0, dim=1) * w),
                lambda x, w: (torch.softmax(x * 3.0, dim=1) * w).sum(),
                [(3, 17000), (3, 17000)]),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_match_torch_values_and_gradients(name, dtype, rng):
    ours, theirs, shapes = CASES[name]
    arrays = [nonzero(rng, s, dtype=dtype) for s in shapes]
    program = C.compile(ours, *[O.spec(s, np.dtype(dtype).name) for s in shapes],
                        grad_argnums=tuple(range(len(shapes))), backend="interpret")
    looped = [k for k in program.schedule.kernels if k.family == "rows" and row_passes(k)]
    assert looped, [k.name for k in program.schedule.kernels]
    value, grads = program(*arrays)
    want_value, want_grads = _torch_grads(theirs, arrays)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert abs(value - want_value) <= tol * max(1.0, abs(want_value))
    for got, want in zip(grads, want_grads):
        assert rel_error(got, want) < tol


def test_every_element_of_a_long_row_is_written(rng):
    """Poisoned outputs (NaN) must all be overwritten, across every block of every pass."""
    x = nonzero(rng, (5, 2 * 16384 + 37), dtype=np.float32)   # three blocks, the last one short
    want, got = run_both(lambda x: O.softmax(x, dim=1) * 2.0 + O.amax(x, dim=1, keepdim=True), x)
    assert_close(want, got, tol=1e-5)


def test_batch_norm_forward_and_backward_are_one_row_kernel_each_way():
    fn, _, shapes = CASES["batch_norm"]
    program = C.compile(fn, *[O.spec(s) for s in shapes], grad_argnums=(0, 1, 2), backend="interpret")
    rows = [k for k in program.schedule.kernels if k.family == "rows"]
    assert len(program.schedule.kernels) <= 3 and rows
    passes, _ = row_passes(rows[0])
    assert len(passes) >= 3                                   # mean, variance, then the outputs
    assert "walked in blocks of BLOCK_COLS" in program.source()


def test_the_cost_model_counts_each_pass_over_a_long_row():
    def f(x):
        return O.batch_norm(x, None, None, training=True)
    graph = C.trace(f, O.spec((8, 2, 32, 32)))
    from compiler.fusion import fuse
    from compiler.lower import lower

    (kernel,) = [k for k in lower(graph, fuse(graph)).kernels if k.family == "rows"]
    passes, _ = row_passes(kernel)
    assert 8 * 32 * 32 > ROW_LIMIT and len(passes) == 3       # Σx, Σ(x - mean)², then the output
    reads, writes = kernel_bytes(kernel)
    x_bytes = 8 * 2 * 32 * 32 * 4
    assert reads == 3 * x_bytes and writes == x_bytes


def test_a_sum_over_every_long_row_is_not_looped_and_says_why():
    """A total (a sum of the per-row results over all rows) needs every row in one program."""
    def f(x):
        return O.mean(O.amax(x, dim=1))
    graph = C.trace(f, O.spec((4, 6000)))
    from compiler.fusion import fuse

    text = fuse(graph).text()
    assert "too long for that" in text
