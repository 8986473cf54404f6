"""The cost model (compiler/cost.py): bytes the kernels move, and the compulsory traffic."""
import numpy as np
import pytest

import compiler as C
import ops as O
from compiler import cost
from compiler.fusion import fuse
from compiler.lower import lower
from compiler.saved import saved_values
from runtime.training.zoo import ZOO


# -- definitions, on graphs small enough to count by hand ---------------------------------------

def test_dram_bytes_of_a_pointwise_chain_unfused_and_fused():
    graph = C.trace(lambda x, b: O.exp(x + b), O.spec((4, 3)), O.spec((3,)))
    # unfused: add reads x (48 B) and b through a broadcast (3 distinct floats: 12 B), writes 48 B;
    #          exp reads 48 B and writes 48 B
    assert [cost.kernel_bytes(k) for k in lower(graph).kernels] == [(60, 48), (48, 48)]
    assert cost.dram_bytes(lower(graph)) == 204
    # fused: one kernel reads x and b, writes exp's result; nothing else: the compulsory minimum
    assert cost.dram_bytes(lower(graph, fuse(graph))) == 108
    assert cost.compulsory(graph) == {"inputs_read": 60, "outputs_written": 48, "saved_written": 0, "saved_read": 0}
    assert cost.min_dram_bytes(graph) == 108


def test_outputs_count_their_memory_once_and_inputs_and_constants_not_at_all():
    def f(x):
        e = O.exp(x)
        return e.T, e.reshape(12), x.T, 2.0        # two views of e; a view of an input; a literal
    graph = C.trace(f, O.spec((4, 3)))
    assert cost.compulsory(graph) == {"inputs_read": 48, "outputs_written": 48, "saved_written": 0, "saved_read": 0}
    assert cost.min_dram_bytes(graph) == 96 == cost.dram_bytes(lower(graph))     # exp: 48 in, 48 out


def test_a_training_step_saves_exp_once_also_through_a_view():
    def f(w, v, x):
        return O.sum(O.exp(x @ w).reshape(8) * v)
    program = C.compile(f, O.spec((3, 2)), O.spec((8,)), O.spec((4, 3)), grad_argnums=(0, 1), backend="reference")
    # the backward reads h = exp(x @ w) (exp's vjp) and its reshape (mul's vjp, for grad v): one f32[4,2]
    # buffer, 32 B, written once by the forward and read once by the backward. Inputs w, v, x: 24 + 32 + 48 B;
    # outputs: the loss 4 B, grad w 24 B; grad v is h itself (h.reshape(8) times a broadcast 1, which simplify
    # drops), a view of the saved buffer: no write of its own. The backward also reads two inputs again: v
    # (32 B, for h's gradient) and x (48 B, for w's gradient x^T @ dh), which no forward kernel can do for it.
    assert cost.compulsory(program.graph) == {"inputs_read": 104, "outputs_written": 28, "saved_written": 32,
                                              "saved_read": 32 + 32 + 48}
    report = program.report()
    assert report["min_dram_bytes"] == 276
    assert report["min_dram_bytes"] <= report["dram_bytes"] == cost.dram_bytes(program.schedule)


def test_kernel_bytes_by_hand_on_a_small_training_step():
    def f(w, x):
        return O.sum(O.exp(x @ w))
    program = C.compile(f, O.spec((3, 2)), O.spec((4, 3)), grad_argnums=(0,), backend="reference")
    schedule = lower(program.graph)                  # one kernel per node
    assert [(k.label, cost.kernel_bytes(k)) for k in schedule.kernels] == [
        ("fwd_matmul", (48 + 24, 32)),               # x @ w
        ("fwd_exp", (32, 32)),
        ("fwd_reduce_sum", (32, 4)),                 # the loss
        ("bwd_matmul", (48 + 32, 24)),                   # x.T (a view of x: 12 floats) @ exp's output (saved): grad w
    ]                                                # (the seed, a broadcast 1, times exp's output: simplified away)
    assert cost.dram_bytes(schedule) == 72 + 32 + 64 + 36 + 104
    # x and w read once (72 B), the loss and grad w written once (28 B), exp's output saved (2 x 32 B),
    # x read again by the backward (48 B)
    assert cost.min_dram_bytes(program.graph) == 72 + 28 + 64 + 48


# -- the zoo --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["logreg", "mlp", "lenet", "resnet"])
def test_compulsory_traffic_bounds_the_fused_schedule_on_the_zoo(name):
    model = ZOO[name]
    params = model.init(np.random.default_rng(0))
    program = C.compile(model.loss, *model.specs(params, 8), grad_argnums=tuple(range(len(params))),
                        backend="reference")
    report = program.report()
    # the bound holds but for saved values that a kernel computes together with their backward reader
    # (logreg's cross_entropy kernel and its gradient): those never reach memory (compiler/cost.py)
    stored = {n for k in program.schedule.kernels for n in k.outputs}
    in_registers = {v.base for v in saved_values(program.graph) if not v.is_input and v.base not in stored}
    assert 0 < report["min_dram_bytes"] - 2 * sum(cost.nbytes(n) for n in in_registers) <= report["dram_bytes"]
    assert report["dram_bytes"] <= cost.dram_bytes(lower(program.graph))          # fusion never moves more
    parts = cost.compulsory(program.graph)
    assert parts["saved_written"] == report["saved_bytes"] <= parts["saved_read"]


def test_the_interpreter_reports_what_the_reference_reports():
    model = ZOO["logreg"]
    params = model.init(np.random.default_rng(0))
    specs = model.specs(params, 8)
    argnums = tuple(range(len(params)))
    interpreted = C.compile(model.loss, *specs, grad_argnums=argnums, backend="interpret").report()
    reference = C.compile(model.loss, *specs, grad_argnums=argnums, backend="reference").report()
    assert interpreted["dram_bytes"] == sum(k["bytes_read"] + k["bytes_written"] for k in interpreted["kernel_bytes"])
    for key in ("dram_bytes", "min_dram_bytes"):
        assert interpreted[key] == reference[key]


def test_a_buffer_read_as_it_is_and_transposed_in_one_kernel_counts_once(rng):
    """The Linear weight gradient dyᵀ @ x with the bias gradient Σ dy riding along: the kernel
    loads dy once (the rider sums the tiles the GEMM loads)."""
    from compiler.cost import kernel_bytes
    from compiler.fusion import fuse, riders
    from compiler.lower import lower

    dy, x = rng.standard_normal((64, 10)).astype(np.float32), rng.standard_normal((64, 32)).astype(np.float32)
    graph = C.trace(lambda dy, x: (dy.T @ x, O.sum(dy, 0)), dy, x)
    (kernel,) = lower(graph, fuse(graph)).kernels
    assert riders(kernel.nodes)
    assert kernel_bytes(kernel) == (dy.nbytes + x.nbytes, 10 * 32 * 4 + 10 * 4)
