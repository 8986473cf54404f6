"""The graph passes (DCE, CSE, constant folding, algebraic identities), autodiff's joint
graph, and the compile cache of C.jit / C.value_and_grad."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from compiler.autodiff import active_nodes
from ops import primitives as P
from ops.primitive import constant
from ops.evaluate import run_graph
from tests.helpers import nonzero, positive, rel_error

TF = torch.nn.functional


def ops_of(graph):
    """The graph's op sequence, sources and constants left out."""
    return [n.op for n in graph.nodes if n.op not in ("input", "const")]


def count(graph, op):
    return sum(n.op == op for n in graph.nodes)


def same_results(a, b, args, tolerance=1e-12):
    out_a, out_b = run_graph(a, args), run_graph(b, args)
    assert len(out_a) == len(out_b)
    for x, y in zip(out_a, out_b):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert rel_error(x, y) < tolerance
    return out_a


def line_of(fn, text):
    """The line number of the line of fn's source that contains `text`."""
    lines, first = inspect.getsourcelines(fn)
    hits = [first + k for k, line in enumerate(lines) if text in line]
    assert len(hits) == 1, (text, hits)
    return hits[0]


# -- DCE --------------------------------------------------------------------------------------------

def with_dead_code(x, y, unused):
    dead = O.exp(x) * y                 # computed, never used
    O.sum(dead)
    return O.sum(x * y)


def test_dce_removes_unused_nodes_and_keeps_every_input(rng):
    g = C.trace(with_dead_code, O.spec((3, 4)), O.spec((3, 4)), O.spec((2,)))
    assert count(g, "exp") == 1 and count(g, "reduce_sum") == 2
    d = C.dce(g)
    assert ops_of(d) == ["mul", "reduce_sum"]
    assert [n.name for n in d.inputs] == ["x", "y", "unused"]
    assert all(n in d.nodes for n in d.inputs)           # the unused input stays: it is the signature
    args = [nonzero(rng, (3, 4)), nonzero(rng, (3, 4)), nonzero(rng, (2,))]
    same_results(g, d, args)
    assert C.dce(d) is d                                 # nothing left to remove: the same graph


# -- CSE --------------------------------------------------------------------------------------------

def test_cse_merges_identical_nodes(rng):
    def f(x, y):
        return O.sum(x * y + x * y) + O.sum(O.exp(x)) * O.sum(O.exp(x))

    g = C.trace(f, O.spec((3, 4), "float64"), O.spec((3, 4), "float64"))
    assert count(g, "mul") == 3 and count(g, "exp") == 2
    merged = C.cse(g)
    assert count(merged, "mul") == 2 and count(merged, "exp") == 1
    mul = next(n for n in merged.nodes if n.op == "mul" and n.shape == (3, 4))
    add = next(n for n in merged.nodes if n.op == "add" and n.shape == (3, 4))
    assert add.inputs == (mul, mul)                      # x*y + x*y reads one node twice
    same_results(g, merged, [nonzero(rng, (3, 4)), nonzero(rng, (3, 4))])


def test_cse_keeps_nodes_with_different_attributes_apart(rng):
    def f(x):
        a = O.sum(x, 0, keepdim=True)           # reduce_sum dims=(0,)
        b = O.sum(x, 1, keepdim=True)           # reduce_sum dims=(1,): same op, same input
        c = x * 2.0 + x * 3.0                   # equal ops on different constants
        d = P.cast(x, dtype="float64") + P.cast(x, dtype="float32")   # different dtype attrs
        e = x + constant(1.0, "float32") + constant(1.0, "float64")   # equal values, different dtypes
        return O.sum(a * b) + O.sum(c) + O.sum(d) + O.sum(e)

    g = C.cse(C.trace(f, O.spec((3, 3))))
    assert count(g, "reduce_sum") == 2 + 4
    assert count(g, "mul") == 3
    assert count(g, "cast") == 2
    consts = [n for n in g.nodes if n.op == "const"]
    keys = [(n.attrs["value"], n.attrs["dtype"]) for n in consts]
    assert len(keys) == len(set(keys))                   # no two equal constants survive
    assert (1.0, "float32") in keys and (1.0, "float64") in keys
    same_results(C.trace(f, O.spec((3, 3))), g, [nonzero(rng, (3, 3), dtype=np.float32)], 1e-6)


def test_cse_merges_equal_constant_arrays(rng):
    table = nonzero(rng, (2, 3))

    def f(x):
        return O.sum(x * table) + O.sum(x * table.copy()) + O.sum(x * (table + 1.0))

    g = C.trace(f, O.spec((2, 3), "float64"))
    assert sum(n.op == "const" and n.shape == (2, 3) for n in g.nodes) == 3
    merged = C.cse(g)
    assert sum(n.op == "const" and n.shape == (2, 3) for n in merged.nodes) == 2
    assert count(merged, "mul") == 2
    same_results(g, merged, [nonzero(rng, (2, 3))])


# -- constant folding --------------------------------------------------------------------------------

def test_fold_constants_folds_scalar_arithmetic():
    def f(x):
        c = constant(2.0, "float64")
        k = (c * 3.0 + 1.0) / 4.0 - O.exp(c * 0.0)        # (2*3+1)/4 - 1 = 0.75
        return x * k

    g = C.trace(f, O.spec((3,), "float64"))
    folded = C.dce(C.fold_constants(g))
    assert ops_of(folded) == ["mul"]
    (mul,) = [n for n in folded.nodes if n.op == "mul"]
    k = mul.inputs[1]
    assert k.is_scalar_const and k.attrs["value"] == 0.75 and k.dtype == "float64"
    x = np.array([1.5, -2.0, 0.25])
    assert np.array_equal(run_graph(folded, [x])[0], x * 0.75)


def test_fold_constants_folds_splats():
    def f(x):
        splat = P.expand(constant(2.0, "float32"), shape=(3, 4))          # 2.0 everywhere
        moved = P.permute(P.reshape(splat, shape=(4, 3)), dims=(1, 0))    # still a splat
        return x * O.exp(moved) + O.where(splat > 1.0, splat, 0.0)

    g = C.trace(f, O.spec((3, 4)))
    folded = C.dce(C.fold_constants(g))
    assert count(folded, "exp") == 0 and count(folded, "gt") == 0 and count(folded, "where") == 0
    assert count(folded, "permute") == 0 and count(folded, "reshape") == 0
    splats = [n for n in folded.nodes if n.op == "expand" and n.inputs[0].is_scalar_const]
    assert {n.inputs[0].attrs["value"] for n in splats} == {float(np.float32(np.exp(np.float32(2.0)))), 2.0}
    x = nonzero(np.random.default_rng(0), (3, 4), dtype=np.float32)
    same_results(g, folded, [x], 1e-6)


def test_fold_constants_leaves_a_reduction_of_a_splat_alone():
    """sum over a splat is n times the value, not the value: a reduction is not folded
    like a pointwise op (the backward of a broadcast scalar makes exactly this)."""
    def f(x):
        return x * P.reduce_sum(P.expand(constant(2.0, "float64"), shape=(3, 4)), dims=(0, 1), keepdim=False)

    g = C.trace(f, O.spec((), "float64"))
    x = np.asarray(1.5)
    for transform in (C.fold_constants, C.simplify):
        assert float(run_graph(transform(g), [x])[0]) == 1.5 * 24.0

    def mean_of_broadcast(s, y):
        return O.mean(s + y)

    value, (ds, dy) = C.value_and_grad(mean_of_broadcast, argnums=(0, 1), backend="reference")(
        np.asarray(0.5), np.full((3, 4), 1.25))
    assert value == pytest.approx(1.75) and ds == pytest.approx(1.0)
    assert np.allclose(dy, 1 / 12)


# -- algebraic identities -----------------------------------------------------------------------------

IDENTITIES = {
    "x*1": lambda x: x * 1.0,
    "1*x": lambda x: 1.0 * x,
    "x+0": lambda x: x + 0.0,
    "0+x": lambda x: 0.0 + x,
    "x-0": lambda x: x - 0.0,
    "x/1": lambda x: x / 1.0,
    "x**1": lambda x: x ** 1.0,
    "--x": lambda x: -(-x),
    "permute∘permute": lambda x: O.permute(O.permute(x, (2, 0, 1)), (1, 2, 0)),
    "reshape to its shape": lambda x: P.reshape(x, shape=x.shape),
    "cast to its dtype": lambda x: P.cast(x, dtype=x.dtype),
    "expand to its shape": lambda x: P.expand(x, shape=x.shape),
    "permute by identity": lambda x: P.permute(x, dims=(0, 1, 2)),
    "detach": lambda x: O.detach(x),
    "where(c, x, x)": lambda x: O.where(x > 0.5, x, x),
}


@pytest.mark.parametrize("name", list(IDENTITIES))
def test_algebraic_identity_fires(rng, name):
    rule = IDENTITIES[name]
    g = C.trace(lambda x: O.tanh(rule(x)), O.spec((2, 3, 4), "float64"))
    simplified = C.dce(C.algebraic(g))
    assert ops_of(simplified) == ["tanh"], f"{name}: {ops_of(simplified)}"
    assert simplified.nodes[-1].inputs[0] is simplified.inputs[0]
    same_results(g, simplified, [nonzero(rng, (2, 3, 4))])


def test_detach_stays_when_asked(rng):
    g = C.trace(lambda x: O.tanh(O.detach(x)), O.spec((3,), "float64"))
    assert count(C.algebraic(g, drop_detach=False), "detach") == 1
    assert count(C.simplify(g, drop_detach=False), "detach") == 1
    assert count(C.simplify(g), "detach") == 0


def test_composed_layout_rules(rng):
    def f(x):
        a = P.permute(P.permute(x, dims=(1, 2, 0)), dims=(1, 0, 2))       # one permute (2, 1, 0)
        b = P.reshape(P.reshape(x, shape=(6, 4)), shape=(4, 6))           # one reshape
        c = P.expand(P.reshape(constant(0.5, "float64"), shape=(1, 1)), shape=(4, 6))   # a splat
        return O.sum(a) + O.sum(b * c)

    g = C.trace(f, O.spec((2, 3, 4), "float64"))
    s = C.dce(C.algebraic(g))
    assert count(s, "permute") == 1 and next(n for n in s.nodes if n.op == "permute").attrs["dims"] == (2, 1, 0)
    assert count(s, "reshape") == 1 and next(n for n in s.nodes if n.op == "reshape").inputs[0] is s.inputs[0]
    (expand,) = [n for n in s.nodes if n.op == "expand"]
    assert expand.inputs[0].is_scalar_const
    same_results(g, s, [nonzero(rng, (2, 3, 4))])


def test_a_transposed_product_becomes_the_product_of_the_transposes(rng):
    """(a @ b)ᵀ = bᵀ @ aᵀ: a Linear weight's gradient comes out of its GEMM in the weight's
    layout, where the optimizer's update can be the GEMM's epilogue; not when the product
    has another reader (that would compute it twice)."""
    def grad_like(a, b):
        return P.permute(a @ b, dims=(1, 0))

    def shared(a, b):
        p = a @ b
        return P.permute(p, dims=(1, 0)) * 2.0, O.sum(p)

    a, b = nonzero(rng, (5, 3)), nonzero(rng, (3, 4))
    g = C.trace(grad_like, a, b)
    s = C.dce(C.algebraic(g))
    (product,) = [n for n in s.nodes if n.op == "matmul"]
    assert s.outputs[0] is product and [i.op for i in product.inputs] == ["permute", "permute"]
    assert product.inputs[0].inputs[0] is s.inputs[1] and product.scope == next(
        n for n in g.nodes if n.op == "matmul").scope
    same_results(g, s, [a, b])
    g = C.trace(shared, a, b)
    assert count(C.simplify(g), "matmul") == 1 and C.simplify(g).outputs[0].inputs[0].op == "permute"


NOT_IDENTITIES = {
    # x * ones / x + zeros that broadcast x to a bigger shape are not x
    "x * ones, bigger": (lambda x: x * np.ones((3, 4)), "mul", (3, 1), "float64"),
    "x + 0 splat, bigger": (lambda x: x + P.expand(constant(0.0, "float64"), shape=(3, 4)), "add", (3, 1),
                            "float64"),
    "0 splat + x, bigger": (lambda x: P.expand(constant(0.0, "float64"), shape=(2, 3, 4)) + x, "add", (3, 1),
                            "float64"),
    "x * 1.0 scalar, x 0-d, bigger": (lambda x: x * P.expand(constant(1.0, "float64"), shape=(5,)), "mul", (),
                                      "float64"),
    # ... nor x * 1 that changes x's dtype
    "int x * 1.0": (lambda x: x * 1.0, "mul", (3,), "int64"),
    "int x + 0.0": (lambda x: x + 0.0, "add", (3,), "int32"),
    "f32 x * f64 1": (lambda x: x * constant(1.0, "float64"), "mul", (3,), "float32"),
    "bool x + 0": (lambda x: x + 0, "add", (3,), "bool"),
}


@pytest.mark.parametrize("name", list(NOT_IDENTITIES))
def test_algebraic_identity_does_not_fire_when_it_would_change_shape_or_dtype(rng, name):
    rule, op, shape, dtype = NOT_IDENTITIES[name]
    g = C.trace(rule, O.spec(shape, dtype))
    out = g.outputs[0]
    for transform in (C.algebraic, C.simplify):
        s = transform(g)
        assert count(s, op) == 1, f"{name}: {transform.__name__} removed the {op}"
        assert (s.outputs[0].shape, s.outputs[0].dtype) == (out.shape, out.dtype)
        if dtype == "bool":
            x = rng.random(shape) > 0.5
        elif dtype.startswith("int"):
            x = rng.integers(1, 9, shape).astype(dtype)
        else:
            x = nonzero(rng, shape, dtype=dtype)
        same_results(g, s, [x])


# -- every pass keeps the results of real models --------------------------------------------------------

def mlp(w1, b1, w2, b2, x, y):
    h = O.relu(O.linear(x, w1, b1))
    return O.cross_entropy(O.linear(h, w2, b2), y)


def mlp_torch(w1, b1, w2, b2, x, y):
    return TF.cross_entropy(TF.linear(TF.relu(TF.linear(x, w1, b1)), w2, b2), y)


def cnn(w1, b1, gamma, beta, w2, w3, b3, x, y):
    h = O.conv2d(x, w1, b1, padding=1)
    h = O.relu(O.batch_norm(h, None, None, weight=gamma, bias=beta, training=True))
    h = O.max_pool2d(h, 3, stride=2, padding=1)
    h = O.avg_pool2d(O.conv2d(h, w2, stride=1, padding=1), 2)
    return O.cross_entropy(O.linear(O.flatten(h, 1), w3, b3), y)


def cnn_torch(w1, b1, gamma, beta, w2, w3, b3, x, y):
    h = TF.conv2d(x, w1, b1, padding=1)
    h = TF.relu(TF.batch_norm(h, None, None, weight=gamma, bias=beta, training=True))
    h = TF.max_pool2d(h, 3, stride=2, padding=1)
    h = TF.avg_pool2d(TF.conv2d(h, w2, stride=1, padding=1), 2)
    return TF.cross_entropy(TF.linear(torch.flatten(h, 1), w3, b3), y)


def norm_model(w, gamma, beta, x, t):
    h = O.layer_norm(x @ w, (6,), weight=gamma, bias=beta)
    return O.mse_loss(O.softmax(h, dim=-1), t) + O.mean(O.log_softmax(h, dim=1))


def norm_model_torch(w, gamma, beta, x, t):
    h = TF.layer_norm(x @ w, (6,), weight=gamma, bias=beta)
    return TF.mse_loss(torch.softmax(h, dim=-1), t) + torch.mean(torch.log_softmax(h, dim=1))


def _model_args(rng, name):
    if name == "mlp":
        floats = [nonzero(rng, s, 0.1, 1.0) for s in ((7, 5), (7,), (3, 7), (3,), (6, 5))]
        return mlp, mlp_torch, floats + [rng.integers(0, 3, 6).astype(np.int64)]
    if name == "cnn":
        floats = [nonzero(rng, (4, 3, 3, 3), 0.1, 0.6), nonzero(rng, (4,)), positive(rng, (4,), 0.5, 1.5),
                  nonzero(rng, (4,)), nonzero(rng, (5, 4, 3, 3), 0.1, 0.6), nonzero(rng, (3, 20), 0.1, 0.6),
                  nonzero(rng, (3,)), nonzero(rng, (2, 3, 8, 8))]
        return cnn, cnn_torch, floats + [rng.integers(0, 3, 2).astype(np.int64)]
    floats = [nonzero(rng, s) for s in ((5, 6), (6,), (6,), (2, 4, 5), (2, 4, 6))]
    return norm_model, norm_model_torch, floats


PASSES = [("dce", C.dce), ("cse", C.cse), ("fold_constants", C.fold_constants), ("algebraic", C.algebraic),
          ("simplify", C.simplify)]


@pytest.mark.parametrize("model", ["mlp", "cnn", "norm"])
def test_every_pass_keeps_the_results_of_a_model(rng, model):
    fn, torch_fn, args = _model_args(rng, model)
    float_args = tuple(i for i, a in enumerate(args) if a.dtype == np.float64)
    forward = C.trace(fn, *args)
    joint = C.grad_graph(forward, float_args)
    base = run_graph(joint, args)

    # the unsimplified joint graph is right to begin with
    ts = [torch.tensor(a, requires_grad=a.dtype == np.float64) for a in args]
    value = torch_fn(*ts)
    grads = torch.autograd.grad(value, [ts[i] for i in float_args])
    assert rel_error(base[0], value.detach().numpy()) < 1e-10
    for got, want in zip(base[1:], grads):
        # (the cnn's conv bias feeds a batch_norm, so its gradient is 0 up to rounding)
        assert np.linalg.norm(got - want.numpy()) <= 1e-9 * max(np.linalg.norm(want.numpy()), 1e-3)

    for name, transform in PASSES:
        for graph in (forward, joint):
            after = transform(graph)
            same_results(graph, after, args)
            if name in ("simplify", "dce"):
                assert after.num_ops <= graph.num_ops
    assert C.simplify(joint).num_ops < joint.num_ops         # there was something to simplify


# -- autodiff's joint graph ---------------------------------------------------------------------------------

def two_lines(x, w):
    h = O.tanh(x @ w)                      # line A
    return O.sum(h * h)                    # line B


def test_joint_graph_names_its_inputs_primals_and_tangents():
    g = C.trace(two_lines, O.spec((4, 3)), O.spec((3, 2)))
    joint = C.grad_graph(g, (0, 1))
    assert [n.name for n in joint.inputs] == ["primals_1", "primals_2"]
    assert joint.output_names == ["value", "grad_x", "grad_w"]
    assert [(n.shape, n.dtype) for n in joint.outputs] == [((), "float32"), ((4, 3), "float32"), ((3, 2), "float32")]
    assert "def two_lines_joint(primals_1: f32[4, 3], primals_2: f32[3, 2]):" in str(joint)

    vjp = C.grad_graph(C.trace(lambda x, w: O.tanh(x @ w), O.spec((4, 3)), O.spec((3, 2))), (0,), seed="input")
    assert [n.name for n in vjp.inputs] == ["primals_1", "primals_2", "tangents_1"]
    assert vjp.inputs[-1].shape == (4, 2)


def test_vjp_with_a_tangent_input_matches_torch(rng):
    g = C.trace(lambda x, w: O.tanh(x @ w), O.spec((4, 3), "float64"), O.spec((3, 2), "float64"))
    joint = C.grad_graph(g, (0, 1), seed="input", with_value=False)
    x, w, t = nonzero(rng, (4, 3)), nonzero(rng, (3, 2)), nonzero(rng, (4, 2))
    dx, dw = run_graph(joint, [x, w, t])
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    want = torch.autograd.grad(torch.tanh(xt @ wt), (xt, wt), torch.from_numpy(t))
    assert rel_error(dx, want[0].numpy()) < 1e-12 and rel_error(dw, want[1].numpy()) < 1e-12


def test_fan_out_adds_the_cotangents():
    def f(x):
        return O.sum(O.exp(x)) + O.sum(O.tanh(x))          # x read twice

    g = C.trace(f, O.spec((3,), "float64"))
    joint = C.grad_graph(g, (0,))
    grad = joint.outputs[1]
    assert grad.op == "add" and grad.role == "backward"
    sources = {i.op for i in grad.inputs}
    assert sources == {"mul"}                              # exp' and tanh' terms
    x = np.array([0.3, -1.2, 0.8])
    assert rel_error(run_graph(joint, [x])[1], np.exp(x) + 1 - np.tanh(x) ** 2) < 1e-12

    def square(x):
        return O.sum(x * x)                                # one node reads x twice

    joint = C.grad_graph(C.trace(square, O.spec((3,), "float64")), (0,))
    assert joint.outputs[1].op == "add"
    assert rel_error(run_graph(joint, [x])[1], 2 * x) < 1e-12


def unused_branch(x, y):
    side = O.exp(y) * O.sigmoid(x)                        # reaches nothing
    O.sum(side)
    return O.sum(O.tanh(x) * y)


def test_unused_branches_make_no_backward_nodes():
    g = C.trace(unused_branch, O.spec((3,)), O.spec((3,)))
    side_line = line_of(unused_branch, "side = ")
    joint = C.grad_graph(g, (0, 1))
    assert not [n for n in joint.nodes if n.source and n.source.line == side_line]
    assert count(joint, "exp") == 0 and count(joint, "sigmoid") == 0

    # activity analysis: the branch is pruned before any backward node is made
    side = next(n for n in g.nodes if n.op == "sigmoid")
    active = active_nodes(g, {g.inputs[0]}, g.outputs[0])
    assert side not in active and g.outputs[0] in active
    assert not any(n.op == "exp" for n in active)            # exp(y) does not depend on x


def test_gradient_of_an_unused_argument_is_zeros(rng):
    def f(x, y, z):
        return O.sum(x * 2.0)

    vg = C.value_and_grad(f, argnums=(0, 1, 2), backend="reference")
    x, y, z = nonzero(rng, (3,)), nonzero(rng, (2, 2)), nonzero(rng, (4,), dtype=np.float32)
    value, (dx, dy, dz) = vg(x, y, z)
    assert np.allclose(dx, 2.0)
    assert dy.shape == (2, 2) and dy.dtype == np.float64 and np.all(dy == 0)
    assert dz.shape == (4,) and dz.dtype == np.float32 and np.all(dz == 0)


def test_gradient_of_an_integer_input_raises(rng):
    def f(x, labels):
        return O.cross_entropy(x, labels)

    g = C.trace(f, O.spec((4, 3)), O.spec((4,), "int64"))
    with pytest.raises(C.GradientError, match="labels"):
        C.grad_graph(g, (1,))
    with pytest.raises(C.GradientError):
        C.value_and_grad(f, argnums=(0, 1), backend="reference")(nonzero(rng, (4, 3)), np.array([0, 2, 1, 1]))
    # with respect to the float argument only, it works
    value, dx = C.value_and_grad(f, argnums=0, backend="reference")(nonzero(rng, (4, 3)), np.array([0, 2, 1, 1]))
    assert dx.shape == (4, 3)


def test_backward_nodes_carry_role_and_the_source_line_of_their_forward_node():
    g = C.trace(two_lines, O.spec((4, 3)), O.spec((3, 2)))
    joint = C.grad_graph(g, (0, 1))
    line_a, line_b = line_of(two_lines, "# line A"), line_of(two_lines, "# line B")
    def_line = two_lines.__code__.co_firstlineno
    forward = [n for n in joint.nodes if n.role == "forward" and n.op not in ("input", "const")]
    backward = [n for n in joint.nodes if n.role == "backward"]
    assert sorted(n.op for n in forward) == sorted(ops_of(g))
    assert backward and all(n.source is not None for n in backward)
    assert {n.source.line for n in backward} <= {line_a, line_b, def_line}
    assert all(n.source.file == __file__ for n in backward)
    # the matmul's vjp (two matmuls) and tanh's come from line A; the h*h's from line B
    assert sum(n.op == "matmul" and n.source.line == line_a for n in backward) == 2
    assert any(n.scope == ("tanh",) and n.source.line == line_a for n in backward)
    assert any(n.op == "mul" and n.source.line == line_b for n in backward)
    # the printed joint graph says so
    text = str(joint)
    assert f"test_passes.py:{line_a}  (backward)" in text


# -- compile cache, dtypes, torch inputs ---------------------------------------------------------------------

def loss(w, x):
    return O.mean(O.tanh(x @ w))


def test_jit_compiles_once_per_signature(rng):
    f = C.jit(loss, backend="reference")
    w, x = nonzero(rng, (3, 2)), nonzero(rng, (4, 3))
    first = f(w, x)
    second = f(w * 2.0, x)
    assert len(f.cache) == 1
    assert first != second
    f(w, nonzero(rng, (5, 3)))                          # a new batch size: a new program
    assert len(f.cache) == 2
    f(w.astype(np.float32), x.astype(np.float32))       # a new dtype: a new program
    assert len(f.cache) == 3
    f(w, nonzero(rng, (5, 3)))
    assert len(f.cache) == 3


def test_value_and_grad_compiles_once_per_signature(rng):
    vg = C.value_and_grad(loss, argnums=(0, 1), backend="reference")
    w, x = nonzero(rng, (3, 2)), nonzero(rng, (4, 3))
    for _ in range(3):
        vg(nonzero(rng, (3, 2)), x)
    assert len(vg.cache) == 1
    value, (dw, dx) = vg(w, nonzero(rng, (7, 3)))
    assert len(vg.cache) == 2 and dx.shape == (7, 3) and dw.shape == (3, 2)
    program = next(iter(vg.cache.values()))
    assert isinstance(program, C.Program) and program.joint is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_follows_the_input_dtype(rng, dtype):
    w, x = nonzero(rng, (3, 2), dtype=dtype), nonzero(rng, (4, 3), dtype=dtype)
    value, (dw, dx) = C.value_and_grad(loss, argnums=(0, 1), backend="reference")(w, x)
    assert np.asarray(value).dtype == dtype and dw.dtype == dtype and dx.dtype == dtype
    assert C.jit(loss, backend="reference")(w, x).dtype == dtype
    wt, xt = torch.tensor(w, dtype=torch.float64, requires_grad=True), torch.tensor(x, dtype=torch.float64)
    want = torch.tanh(xt @ wt).mean()
    (want_dw,) = torch.autograd.grad(want, wt)
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    assert rel_error(value, want.detach().numpy()) < tolerance and rel_error(dw, want_dw.numpy()) < tolerance


def test_torch_cpu_tensors_are_accepted(rng):
    w, x = nonzero(rng, (3, 2)), nonzero(rng, (4, 3))
    vg = C.value_and_grad(loss, argnums=(0, 1), backend="reference")
    value, (dw, dx) = vg(torch.from_numpy(w), torch.from_numpy(x))
    want_value, (want_dw, want_dx) = vg(w, x)
    assert isinstance(value, np.ndarray) and isinstance(dw, np.ndarray)
    assert value == want_value and np.array_equal(dw, want_dw) and np.array_equal(dx, want_dx)
    assert len(vg.cache) == 1                           # a torch tensor has the same signature as its array
    wt = torch.from_numpy(w).requires_grad_(True)       # a tensor that requires grad is fine too
    # x given as float32: the graph computes in float32 (float64 @ float32 promotes to float64, but x
    # itself was rounded to float32), so allow float32 rounding of the inputs
    got = C.jit(loss, backend="reference")(wt, torch.from_numpy(x).float())
    assert got == pytest.approx(float(want_value), rel=1e-5, abs=1e-6)


def test_a_broadcast_one_or_zero_is_an_identity_only_when_the_shape_stays(rng):
    ones = lambda shape: P.expand(constant(1.0, "float64"), shape=shape)
    zeros = lambda shape: P.expand(constant(0.0, "float64"), shape=shape)
    g = C.trace(lambda x: ones((3, 4)) * x + zeros((3, 4)) - zeros((3, 4)), O.spec((3, 4), "float64"))
    s = C.simplify(g)
    assert s.outputs[0] is s.inputs[0]                      # the seed of a sum's gradient, gone
    g = C.trace(lambda x: ones((2, 3, 4)) * x, O.spec((3, 4), "float64"))     # broadcasts x: stays
    assert count(C.simplify(g), "mul") == 1
    same_results(g, C.simplify(g), [nonzero(rng, (3, 4))])


def test_cse_knows_that_add_and_mul_commute(rng):
    g = C.trace(lambda x, y: (0.5 * x) * (x * 0.5) + (x + y) * (y + x) - O.maximum(x, y) + O.maximum(y, x),
                O.spec((3,), "float64"), O.spec((3,), "float64"))
    s = C.cse(g)
    assert count(s, "mul") == 3 and count(s, "maximum") == 1 and count(s, "add") == 3     # x+y once, + twice
    same_results(g, s, [nonzero(rng, (3,)), nonzero(rng, (3,))])
