"""A graph's text form: pinned exactly, runnable as Python, and a fixed point of
print -> exec -> trace; and its networkx view."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import compiler as C
import ops as O
from ops.evaluate import run_graph
from tests.helpers import nonzero, positive, rel_error
from tests.test_random_programs import chainrule_fn, programs


def model(w, x):
    return O.mean(O.relu(x @ w))


LINE = model.__code__.co_firstlineno + 1          # the line of `return O.mean(...)`

FORWARD = f"""\
from ops.primitives import *


def model(w: f32[3, 2], x: f32[4, 3]):
    t0 = matmul(x, w)                                # f32[4,2]             test_printer.py:{LINE}
    t1 = le(t0, 0.0)                                 # bool[4,2]      relu  test_printer.py:{LINE}
    t2 = where(t1, 0.0, t0)                          # f32[4,2]       relu  test_printer.py:{LINE}
    t3 = reduce_sum(t2, dims=(0, 1), keepdim=False)  # f32[]          mean  test_printer.py:{LINE}
    t4 = div(t3, 8.0)                                # f32[]          mean  test_printer.py:{LINE}
    return t4
"""

JOINT = f"""\
from ops.primitives import *


def model_joint(primals_1: f32[3, 2], primals_2: f32[4, 3]):
    t0 = matmul(primals_2, primals_1)                # f32[4,2]               test_printer.py:{LINE}
    t1 = le(t0, 0.0)                                 # bool[4,2]      relu    test_printer.py:{LINE}
    t2 = where(t1, 0.0, t0)                          # f32[4,2]       relu    test_printer.py:{LINE}
    t3 = reduce_sum(t2, dims=(0, 1), keepdim=False)  # f32[]          mean    test_printer.py:{LINE}
    t4 = div(t3, 8.0)                                # f32[]          mean    test_printer.py:{LINE}
    t5 = div(1.0, 8.0)                               # f32[]          mean    test_printer.py:{LINE}  (backward)
    t6 = reshape(t5, shape=(1, 1))                   # f32[1,1]       mean    test_printer.py:{LINE}  (backward)
    t7 = expand(t6, shape=(4, 2))                    # f32[4,2]       mean    test_printer.py:{LINE}  (backward)
    t8 = where(t1, 0.0, t7)                          # f32[4,2]       relu    test_printer.py:{LINE}  (backward)
    t9 = permute(primals_2, dims=(1, 0))             # f32[3,4]       matmul  test_printer.py:{LINE}  (backward)
    t10 = matmul(t9, t8)                             # f32[3,2]               test_printer.py:{LINE}  (backward)
    return t4, t10  # value, grad_w
"""

SIMPLIFIED = f"""\
from ops.primitives import *


def model_joint(primals_1: f32[3, 2], primals_2: f32[4, 3]):
    t0 = matmul(primals_2, primals_1)                # f32[4,2]               test_printer.py:{LINE}
    t1 = le(t0, 0.0)                                 # bool[4,2]      relu    test_printer.py:{LINE}
    t2 = where(t1, 0.0, t0)                          # f32[4,2]       relu    test_printer.py:{LINE}
    t3 = reduce_sum(t2, dims=(0, 1), keepdim=False)  # f32[]          mean    test_printer.py:{LINE}
    t4 = div(t3, 8.0)                                # f32[]          mean    test_printer.py:{LINE}
    t5 = expand(0.125, shape=(4, 2))                 # f32[4,2]       mean    test_printer.py:{LINE}  (backward)
    t6 = where(t1, 0.0, t5)                          # f32[4,2]       relu    test_printer.py:{LINE}  (backward)
    t7 = permute(primals_2, dims=(1, 0))             # f32[3,4]       matmul  test_printer.py:{LINE}  (backward)
    t8 = matmul(t7, t6)                              # f32[3,2]               test_printer.py:{LINE}  (backward)
    return t4, t8  # value, grad_w
"""


def traced_model(dtype="float32"):
    return C.trace(model, O.spec((3, 2), dtype), O.spec((4, 3), dtype))


def test_forward_text_is_pinned():
    assert str(traced_model()) == FORWARD


def test_joint_text_is_pinned():
    joint = C.grad_graph(traced_model(), (0,))
    assert str(joint) == JOINT
    assert str(C.simplify(joint)) == SIMPLIFIED


# -- the text runs, and re-traces to the same graph ------------------------------------------------------

def load(text, filename="<printed>"):
    """exec a printed program; returns its function."""
    namespace = {}
    exec(compile(text, filename, "exec"), namespace)
    functions = [v for v in namespace.values() if getattr(v, "__code__", None) is not None
                 and v.__code__.co_filename == filename]
    assert len(functions) == 1
    return functions[0]


def code_lines(text):
    """The program without its comments (types, scopes, source lines, output names)."""
    return [line.split("  # ")[0].rstrip() for line in text.splitlines()]


def signature(graph):
    return [(n.op, n.shape, n.dtype, _attrs(n)) for n in graph.nodes if n.op not in ("input", "const")] + \
        [("input", n.shape, n.dtype, n.name) for n in graph.inputs]


def _attrs(node):
    return {k: (v.tobytes(), v.dtype.name, v.shape) if isinstance(v, np.ndarray) else v for k, v in node.attrs.items()}


def check_round_trip(graph, args, tolerance=0.0):
    """Printed graph == runnable program: its NumPy result equals the reference executor's,
    and tracing it again gives the same program (and then a fixed point)."""
    text = str(graph)
    fn = load(text)
    got = fn(*args)
    got = list(got) if isinstance(got, tuple) else [got]
    want = run_graph(graph, args)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        if tolerance:
            assert rel_error(g, w) <= tolerance
        else:
            assert np.array_equal(g, w, equal_nan=True)

    again = C.trace(fn, *[O.spec(n.shape, n.dtype) for n in graph.inputs])
    assert signature(again) == signature(graph)
    assert code_lines(str(again)) == code_lines(text)
    assert np.array_equal(run_graph(again, args)[0], want[0], equal_nan=True)
    # print -> exec -> trace is now a fixed point, comments and all
    third = C.trace(load(str(again)), *[O.spec(n.shape, n.dtype) for n in graph.inputs])
    assert str(third) == str(again)
    return text


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_printed_model_runs_and_retraces(rng, dtype):
    g = traced_model(dtype)
    args = [nonzero(rng, (3, 2), dtype=dtype), nonzero(rng, (4, 3), dtype=dtype)]
    check_round_trip(g, args)
    joint = C.grad_graph(g, (0, 1))
    check_round_trip(joint, args)
    check_round_trip(C.simplify(joint), args)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_printed_literals_keep_their_dtype(rng, dtype):
    """In a float64 graph, `div(1.0, 8.0)` alone would re-trace as float32: the printer
    spells such a constant with its dtype, `f64(1.0)`."""
    joint = C.grad_graph(traced_model(dtype), (0,))
    text = check_round_trip(joint, [nonzero(rng, (3, 2), dtype=dtype), nonzero(rng, (4, 3), dtype=dtype)])
    if dtype == "float64":
        assert "div(f64(1.0), 8.0)" in text
        assert "expand(f64(0.125), shape=(4, 2))" in str(C.simplify(joint))
    else:
        assert "div(1.0, 8.0)" in text and "f32(" not in text


def mixed(x, k):
    from ops.primitive import constant

    return O.sum(x * constant(2.0, "float64")) + O.sum(k * 3) + O.sum(O.to(k, "float32") + 0.5)


def test_literal_whose_dtype_differs_from_its_operands(rng):
    g = C.trace(mixed, O.spec((3,), "float32"), O.spec((2,), "int32"))
    text = check_round_trip(g, [nonzero(rng, (3,), dtype=np.float32), rng.integers(1, 9, (2,)).astype(np.int32)])
    assert "mul(x, f64(2.0))" in text                       # float32 x times a float64 constant
    assert "mul(k, 3)" in text                              # a weak int stays an int32 literal


# -- bigger graphs: a CNN, constants, iota, infinities --------------------------------------------------------

def cnn(x, w1, b1, gamma, beta, w2, y):
    h = O.conv2d(x, w1, b1, padding=1)
    h = O.relu(O.batch_norm(h, None, None, weight=gamma, bias=beta, training=True))
    h = O.max_pool2d(h, 2)
    h = O.avg_pool2d(O.conv2d(h, w2, stride=2), 1)
    return O.cross_entropy(O.flatten(h, 1), y)


def cnn_args(rng, dtype):
    return [nonzero(rng, (2, 3, 6, 6), dtype=dtype), nonzero(rng, (4, 3, 3, 3), 0.1, 0.6, dtype=dtype),
            nonzero(rng, (4,), dtype=dtype), positive(rng, (4,), 0.5, 1.5, dtype=dtype),
            nonzero(rng, (4,), dtype=dtype), nonzero(rng, (3, 4, 3, 3), 0.1, 0.6, dtype=dtype),
            rng.integers(0, 3, 2).astype(np.int64)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_printed_cnn_runs_and_retraces(rng, dtype):
    args = cnn_args(rng, dtype)
    g = C.trace(cnn, *args)
    text = check_round_trip(g, args)
    for op in ("conv2d(", "window_argmax(", "window_gather(", "window_sum(", "iota(", "reduce_sum("):
        assert op in text
    joint = C.grad_graph(g, (1, 2, 3, 4, 5))
    text = check_round_trip(joint, args)
    for op in ("conv2d_grad_input(", "conv2d_grad_weight(", "window_scatter(", "window_sum_transpose("):
        assert op in text
    check_round_trip(C.simplify(joint), args)


def masked(x, y, scores):
    """Constant arrays (a bool mask, per-window counts), iota, and -inf literals."""
    causal = np.tril(np.ones((4, 4), dtype=bool))
    attention = O.softmax(O.where(causal, scores, float("-inf")), dim=-1)
    h = O.max_pool2d(x, 3, stride=2, padding=1)
    p = O.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    z = O.log_softmax(O.flatten(h, 1), dim=1)
    return O.cross_entropy(z, y) + O.mean(p) + O.sum(attention * scores) + O.amax(z)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_printed_constants_iota_and_infinities_run_and_retrace(rng, dtype):
    args = [nonzero(rng, (2, 1, 4, 4), dtype=dtype), rng.integers(0, 4, 2).astype(np.int64),
            nonzero(rng, (3, 4, 4), dtype=dtype)]
    g = C.trace(masked, *args)
    text = check_round_trip(g, args)
    assert "-inf" in text
    assert "iota(shape=(2, 4), dim=1, dtype='int64')" in text
    assert "const([[ True, False, False, False], [ True,  True, False, False]," in text
    assert "const([[[[4., 6., 6., 4.], [6., 9., 9., 6.], [6., 9., 9., 6.], [4., 6., 6., 4.]]]]" in text
    body = code_lines(text)[4:-1]
    assert body and all(re.fullmatch(r"    t\d+ = \w+\(.*\)", line) for line in body)     # one line per node
    joint = C.grad_graph(g, (0, 2))
    check_round_trip(joint, args)
    check_round_trip(C.simplify(joint), args)


def test_printed_scalar_and_bool_arguments(rng):
    """0-d and bool inputs have annotations Python can evaluate: f32[()] and b8[...]."""
    def f(s, mask, x):
        return O.sum(O.where(mask, x * s, -x))

    g = C.trace(f, O.spec((), "float64"), O.spec((3,), "bool"), O.spec((3,), "float64"))
    text = check_round_trip(g, [np.asarray(1.5), np.array([True, False, True]), nonzero(rng, (3,))])
    assert "def f(s: f64[()], mask: b8[3], x: f64[3]):" in text
    check_round_trip(C.grad_graph(g, (0, 2)), [np.asarray(1.5), np.array([True, False, True]), nonzero(rng, (3,))])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_programs_print_run_and_retrace(program):
    """The random float64 programs of test_random_programs: forward, joint and simplified
    graphs all print to programs that run and re-trace to themselves."""
    inputs, steps, weight = program
    forward = C.trace(chainrule_fn(steps, weight), *[O.spec(x.shape, "float64") for x in inputs])
    joint = C.grad_graph(forward, tuple(range(len(inputs))))
    for graph in (forward, joint, C.simplify(joint)):
        check_round_trip(graph, inputs)


# -- networkx -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["forward", "joint", "cnn"])
def test_networkx_view_has_a_vertex_per_node_and_an_edge_per_input(rng, which):
    if which == "cnn":
        graph = C.grad_graph(C.trace(cnn, *cnn_args(rng, "float32")), (1,))
    else:
        graph = traced_model() if which == "forward" else C.grad_graph(traced_model(), (0, 1))
    dg = graph.to_networkx()
    assert sorted(dg.nodes) == sorted(n.id for n in graph.nodes)
    assert len({n.id for n in graph.nodes}) == len(graph.nodes)
    assert set(dg.edges) == {(i.id, n.id) for n in graph.nodes for i in n.inputs}
    for n in graph.nodes:
        data = dg.nodes[n.id]
        assert data["op"] == n.op and data["shape"] == n.shape and data["dtype"] == n.dtype and data["role"] == n.role
        assert dg.in_degree(n.id) == len(set(n.inputs))
    import networkx as nx

    assert nx.is_directed_acyclic_graph(dg)
    order = {n.id: k for k, n in enumerate(graph.nodes)}
    assert all(order[a] < order[b] for a, b in dg.edges)       # the node list is a topological order
