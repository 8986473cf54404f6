"""Fusion: grouping pointwise nodes into one kernel never changes a result and never makes a
kernel wait for itself; every pair that stayed apart has a reason."""
import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import compiler as C
import ops as O
from compiler.codegen import Target
from compiler.fusion import fuse
from runtime.training import zoo
from ops.evaluate import run_graph
from runtime.executors.triton import TritonExecutor
from tests.helpers import nonzero, rel_error, kernel_executor
from tests.test_random_programs import _error, chainrule_fn, describe, programs


def training_step(name, rng, batch=4):
    model = zoo.ZOO[name]
    params = model.init(rng)
    x = rng.uniform(0.1, 1.0, (batch, 1, 8, 8) if model.image else (batch, 64)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    graph = C.simplify(C.grad_graph(C.trace(model.loss, *params, x, y), tuple(range(len(params)))))
    return graph, params + [x, y]


def assert_acyclic_groups(plan):
    """Contract every group to one vertex: the result must still be a DAG."""
    dag = nx.DiGraph()
    for node in plan.graph.nodes:
        here = plan.group_of.get(node, ("buffer", node.id))
        dag.add_node(here)
        for i in node.inputs:
            there = plan.group_of.get(i, ("buffer", i.id))
            if there != here:
                dag.add_edge(there, here)
    assert nx.is_directed_acyclic_graph(dag)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_fusion_on_and_off_give_equal_results_on_the_zoo(name, rng):
    graph, args = training_step(name, rng)
    want = run_graph(graph, args)
    unfused = kernel_executor(graph, Target(), poison=True, fuse=False)
    fused = kernel_executor(graph, Target(), poison=True, fuse=True)
    assert len(fused.schedule.kernels) < len(unfused.schedule.kernels)
    for a, b, w in zip(fused(args), unfused(args), want):
        assert rel_error(a, w) < 1e-4 and rel_error(b, w) < 1e-4
    assert_acyclic_groups(fused.compiled.fusion)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.filter_too_much])
@given(programs())
def test_fusion_on_random_programs_is_acyclic_and_exact(program):
    inputs, steps, weight = program
    fn = chainrule_fn(steps, weight)
    graph = C.simplify(C.grad_graph(C.trace(fn, *inputs), tuple(range(len(inputs)))))
    plan = fuse(graph)
    assert_acyclic_groups(plan)
    want = run_graph(graph, inputs)
    got = kernel_executor(graph, Target(), poison=True, fuse=True)(inputs)
    for k, (g, w) in enumerate(zip(got, want)):
        # _error measures against at least 1e-8: a gradient that is 0 in exact arithmetic comes
        # out as roundoff of ~1e-17 on one side and 0 on the other
        assert _error(g, w) < 1e-6, f"output {k}\n{describe(inputs, steps)}"


def test_a_pointwise_chain_is_one_kernel(rng):
    x, y = nonzero(rng, (5, 7), dtype=np.float32), nonzero(rng, (7,), dtype=np.float32)

    def f(x, y):
        return O.tanh(O.exp(x * 0.5) + y) * 2.0 - x

    graph = C.trace(f, x, y)
    executor = kernel_executor(graph, Target(), poison=True)
    assert len(executor.schedule.kernels) == 1
    assert rel_error(executor([x, y])[0], run_graph(graph, [x, y])[0]) < 1e-5
    assert "pointwise nodes fused: the intermediates stay in registers" in executor.source()


def test_a_value_needed_elsewhere_at_another_shape_is_not_fused(rng):
    x = nonzero(rng, (4, 1), dtype=np.float32)
    z = nonzero(rng, (4, 6), dtype=np.float32)

    def f(x, z):
        e = O.exp(x)                   # [4, 1], returned as is and broadcast into [4, 6]
        return e, e * z

    plan = fuse(C.trace(f, x, z))
    assert len(plan.groups) == 2
    (producer, consumer, reason), = plan.rejected
    assert (producer.op, consumer.op) == ("exp", "mul")
    assert "needed outside the kernel at its own shape" in reason


def test_fusion_never_waits_for_itself(rng):
    x = nonzero(rng, (6, 5), dtype=np.float32)
    w = nonzero(rng, (5, 5), dtype=np.float32)

    def f(x, w):
        a = O.exp(x)
        m = a @ w                      # a matmul between a and the addition: a kernel of its own
        return a + m

    graph = C.trace(f, x, w)
    plan = fuse(graph)
    assert_acyclic_groups(plan)
    assert any("wait for itself" in reason for _, _, reason in plan.rejected)
    got = kernel_executor(graph, Target(), poison=True)([x, w])[0]
    assert rel_error(got, run_graph(graph, [x, w])[0]) < 1e-5


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "cross_entropy"])
def test_row_composites_compile_to_one_kernel(name, rng):
    x = nonzero(rng, (6, 10), dtype=np.float32)
    labels = rng.integers(0, 10, 6)
    fn = {"softmax": lambda x, y: O.softmax(x, 1), "log_softmax": lambda x, y: O.log_softmax(x, 1),
          "layer_norm": lambda x, y: O.layer_norm(x, (10,)), "cross_entropy": O.cross_entropy}[name]
    graph = C.simplify(C.trace(fn, x, labels))
    executor = kernel_executor(graph, Target(), poison=True)
    assert [k.family for k in executor.schedule.kernels] == ["rows"]
    assert executor.schedule.kernels[0].label == f"fwd_{name}"     # named after the composite, in the forward
    assert rel_error(executor([x, labels])[0], run_graph(graph, [x, labels])[0]) < 1e-5


def test_cross_entropy_and_its_gradient_are_one_row_kernel(rng):
    """The backward of log_softmax reshapes its row sums (64,) -> (64, 1): a reshape that only
    adds a size-1 dimension keeps every element in its lane, so it fuses into the row kernel."""
    x = nonzero(rng, (6, 10), dtype=np.float32)
    labels = rng.integers(0, 10, 6)
    graph = C.simplify(C.grad_graph(C.trace(O.cross_entropy, x, labels), (0,)))
    executor = kernel_executor(graph, Target(), poison=True)
    assert [k.family for k in executor.schedule.kernels] == ["rows"]
    assert any(n.op == "reshape" for n in executor.schedule.kernels[0].nodes)
    for got, want in zip(executor([x, labels]), run_graph(graph, [x, labels])):
        assert rel_error(got, want) < 1e-5


def test_a_reshape_that_moves_elements_to_other_lanes_is_not_fused(rng):
    """(4,) -> (4, 1) then added to a [4, 4] tile: the reshaped value varies along rows, the
    original along columns; fusing the reshape would read the wrong element."""
    x, y = nonzero(rng, (4,), dtype=np.float32), nonzero(rng, (4, 4), dtype=np.float32)
    graph = C.trace(lambda x, y: O.exp(x).reshape((4, 1)) + y, x, y)
    plan = fuse(graph)
    assert any("moves its elements" in reason or "reshape" in reason for _, _, reason in plan.rejected)
    got = kernel_executor(graph, Target(), poison=True)([x, y])[0]
    assert rel_error(got, run_graph(graph, [x, y])[0]) < 1e-6


def test_the_fusion_report_names_every_kernel_and_reason(rng):
    graph, _ = training_step("lenet", rng)
    plan = fuse(graph)
    text = plan.text()
    computing = [g for g in plan.groups if any(n.op not in ("reshape", "permute", "expand", "slice") for n in g)]
    assert text.splitlines()[0].startswith(f"{len(computing)} kernels for")
    assert "did not fuse:" in text
    assert "conv2d_grad_input" in text and "zoo.py:" in text


def test_max_pool_forward_is_one_kernel_that_stores_the_max_and_its_offset(rng):
    x = nonzero(rng, (2, 3, 7, 6), dtype=np.float32)

    def loss(x):
        return O.sum(O.max_pool2d(x, 3, 2, 1) * 2.0)

    graph = C.simplify(C.grad_graph(C.trace(loss, x), (0,)))
    executor = kernel_executor(graph, Target(), poison=True)
    first = executor.schedule.kernels[0]
    assert [n.op for n in first.nodes] == ["window_argmax", "window_gather"]
    assert first.label == "fwd_max_pool2d" and len(first.outputs) == 2    # offsets for the backward, and the max
    for got, want in zip(executor([x]), run_graph(graph, [x])):
        assert rel_error(got, want) < 1e-5


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pooling_backward_takes_the_activation_gradient_as_an_epilogue(pool, rng):
    x = nonzero(rng, (2, 3, 7, 6), dtype=np.float32)
    r = nonzero(rng, (2, 3, 3, 3), dtype=np.float32)

    def loss(x, r):
        pooled = O.max_pool2d(O.relu(x), 3, 2, 1) if pool == "max" else O.avg_pool2d(O.tanh(x), 2, 2)
        return O.sum(pooled[:, :, :3, :3] * r)

    graph = C.simplify(C.grad_graph(C.trace(loss, x, r), (0,)))
    fused = kernel_executor(graph, Target(), poison=True)
    heads = [k for k in fused.schedule.kernels if k.nodes[0].op in ("window_scatter", "window_sum_transpose")]
    assert len(heads) == 1 and len(heads[0].nodes) > 1           # the activation's gradient joined the window kernel
    assert "epilogue:" in fused.compiled.sources[fused.schedule.kernels.index(heads[0])]
    unfused = kernel_executor(graph, Target(), poison=True, fuse=False)
    for a, b, w in zip(fused([x, r]), unfused([x, r]), run_graph(graph, [x, r])):
        assert rel_error(a, w) < 1e-5 and rel_error(b, w) < 1e-5


def test_batch_norm_forward_is_one_kernel_and_its_backward_at_most_three(rng):
    x = nonzero(rng, (8, 4, 5, 5), dtype=np.float32)
    gamma, beta = nonzero(rng, (4,), dtype=np.float32), nonzero(rng, (4,), dtype=np.float32)
    r = nonzero(rng, x.shape, dtype=np.float32)

    def bn(x, g, b):
        return O.batch_norm(x, None, None, g, b, training=True)

    forward = C.simplify(C.trace(bn, x, gamma, beta))
    assert [k.family for k in kernel_executor(forward, Target()).schedule.kernels] == ["rows"]
    joint = C.simplify(C.grad_graph(C.trace(lambda x, g, b, r: O.sum(bn(x, g, b) * r), x, gamma, beta, r), (0, 1, 2)))
    executor = kernel_executor(joint, Target(), poison=True)
    # the forward, the loss's sum (which the test adds) and at most three for the backward
    assert len(executor.schedule.kernels) <= 5
    for got, want in zip(executor([x, gamma, beta, r]), run_graph(joint, [x, gamma, beta, r])):
        assert rel_error(got, want) < 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sibling_updates_that_read_the_learning_rate_share_one_launch(dtype, rng):
    """p - lr * g for three parameters: three pointwise kernels that all read lr and do not
    depend on each other run as one horizontal kernel, each over its own elements."""
    shapes = [(30, 10), (7,), (3, 3, 2)]
    params = [nonzero(rng, s, dtype=dtype) for s in shapes]
    grads = [nonzero(rng, s, dtype=dtype) for s in shapes]
    lr = np.asarray(0.1, dtype=dtype)

    def sgd(p1, p2, p3, g1, g2, g3, lr):
        return p1 - lr * g1, p2 - lr * g2, p3 - lr * g3
    graph = C.trace(sgd, *params, *grads, lr)
    executor = kernel_executor(graph, Target(), poison=True)
    assert [k.family for k in executor.schedule.kernels] == ["horizontal"]
    assert "3 independent parts in one launch" in fuse(graph).text()
    for got, want in zip(executor([*params, *grads, lr]), run_graph(graph, [*params, *grads, lr])):
        assert got.shape == want.shape and rel_error(got, want) < 1e-6


def test_siblings_that_depend_on_each_other_stay_apart(rng):
    """a = 2x and b = x + a @ w both read x, but b waits for a (through the matmul): one
    launch for both would wait for itself."""
    x, w = nonzero(rng, (5, 5), dtype=np.float64), nonzero(rng, (5, 5), dtype=np.float64)
    graph = C.trace(lambda x, w: x + O.exp(2.0 * x) @ w, x, w)
    plan = fuse(graph)
    assert_acyclic_groups(plan)
    executor = kernel_executor(graph, Target(), poison=True)
    assert "horizontal" not in [k.family for k in executor.schedule.kernels]
    assert rel_error(executor([x, w])[0], run_graph(graph, [x, w])[0]) < 1e-12


def test_a_consumer_of_a_kernels_value_is_not_its_sibling(rng):
    """t * t joins tanh's kernel; minimum(t, y) iterates over another shape, so it stays apart
    (it reads t from memory). Sibling fusion must not bundle it back in through t."""
    x, y = nonzero(rng, (2, 5), dtype=np.float64), nonzero(rng, (7, 2, 2, 5), dtype=np.float64)

    def f(x, y):
        t = O.tanh(x / x)
        return t * t, O.minimum(t, y)
    graph = C.trace(f, x, y)
    executor = kernel_executor(graph, Target(), poison=True)
    assert "horizontal" not in [k.family for k in executor.schedule.kernels]
    assert len(executor.schedule.kernels) == 2
    for got, want in zip(executor([x, y]), run_graph(graph, [x, y])):
        assert rel_error(got, want) < 1e-12
