"""What the forward saves for the backward (compiler/saved.py), and rematerialization
(compiler/remat.py): the saved values are the ones a learner expects, the report is pinned,
and recomputing in the backward never changes a result nor raises the bytes kept."""
from __future__ import annotations

import os

import numpy as np
import pytest

import compiler as C
import ops as O
from compiler.remat import recomputable, regenerate_random, rematerialize
from compiler.saved import saved_bytes, saved_input_bytes, saved_report, saved_values
from ops.primitive import REGISTRY
from runtime.training import zoo
from ops.evaluate import run_graph
from tests.helpers import nonzero, rel_error


def joint(fn, *specs, argnums):
    """The simplified joint graph of fn: what C.compile runs."""
    return C.compile(fn, *specs, grad_argnums=argnums, backend="reference").graph


def by_name(graph):
    return {v.name: v for v in saved_values(graph)}


def forward_read_by_backward(graph):
    """The brute-force definition: forward values (and inputs) some backward node reads."""
    return {i for n in graph.nodes if n.role != "forward" for i in n.inputs
            if i.op == "input" or (i.role == "forward" and i.op != "const")}


def labels(rng, n, classes=10):
    return rng.integers(0, classes, n).astype(np.int64)


# -- a small MLP ------------------------------------------------------------------------------------

def mlp(w1, b1, w2, b2, x, y):
    h = O.relu(O.linear(x, w1, b1))
    return O.cross_entropy(O.linear(h, w2, b2), y)


MLP_SPECS = (O.spec((16, 8)), O.spec((16,)), O.spec((10, 16)), O.spec((10,)), O.spec((4, 8)), O.spec((4,), "int64"))


def test_mlp_saves_what_its_backward_reads_and_nothing_else():
    g = joint(mlp, *MLP_SPECS, argnums=(0, 1, 2, 3))
    values = saved_values(g)
    assert {v.node for v in values} == forward_read_by_backward(g)
    assert all(v.readers and all(r.role != "forward" and v.node in r.inputs for r in v.readers) for v in values)

    forward = [v for v in values if not v.is_input]
    ops = sorted(v.node.op for v in forward)
    # relu's mask and output, exp's output and its sum (log_softmax), the one-hot labels, and their
    # sum: the mean's count (labels equal to ignore_index count in neither sum, as in torch)
    assert ops == sorted(["le", "where", "exp", "reduce_sum", "cast", "reduce_sum"])
    mask = next(v for v in forward if v.node.op == "le")
    assert mask.type == "bool[4,16]" and mask.bytes == 64 and "backward of where" in mask.why and "relu" in mask.why
    relu_out = next(v for v in forward if v.node.op == "where")
    assert relu_out.type == "f32[4,16]" and relu_out.bytes == 256
    assert "backward of matmul" in relu_out.why and "for the gradient of primals_3" in relu_out.why   # w2's
    assert not any(v.node.op in ("matmul", "add") for v in forward)        # pre-activations are not kept

    inputs = {v.name for v in values if v.is_input}
    # x for w1's gradient, w2 to send the gradient back to h; w1, the biases and y are not read
    assert inputs == {"primals_5", "primals_3"}
    assert "for the gradient of primals_1" in by_name(g)["primals_5"].why
    assert all(v.source.startswith("test_saved.py:") for v in values)

    assert saved_bytes(g) == 64 + 256 + 4 * 10 * 4 + 4 * 4 + 4 * 10 * 4 + 4
    assert saved_input_bytes(g) == 4 * 8 * 4 + 10 * 16 * 4


def test_nothing_is_saved_without_a_backward_or_for_what_needs_no_gradient():
    fwd = C.trace(mlp, *MLP_SPECS)
    assert saved_values(fwd) == [] and saved_bytes(fwd) == 0
    assert "has no backward" in saved_report(fwd)
    assert rematerialize(fwd) is fwd

    # only the biases: no matmul input is needed, and relu's mask still is
    g = joint(mlp, *MLP_SPECS, argnums=(1, 3))
    ops = {v.node.op for v in saved_values(g) if not v.is_input}
    assert "where" not in ops and "le" in ops


# -- conv, relu, max pool, cross entropy ----------------------------------------------------------------

def cnn(k, kb, w, b, x, y):
    h = O.max_pool2d(O.relu(O.conv2d(x, k, kb, padding=1)), 2)        # [N, 4, 4, 4]
    return O.cross_entropy(O.linear(O.flatten(h, 1), w, b), y)


CNN_SPECS = (O.spec((4, 1, 3, 3)), O.spec((4,)), O.spec((10, 64)), O.spec((10,)), O.spec((2, 1, 8, 8)),
             O.spec((2,), "int64"))


def test_conv_relu_maxpool_cross_entropy_saves_mask_indices_and_matmul_input():
    g = joint(cnn, *CNN_SPECS, argnums=(0, 1, 2, 3))
    values = saved_values(g)
    assert {v.node for v in values} == forward_read_by_backward(g)
    forward = {v.node.op: v for v in values if not v.is_input}
    assert set(forward) == {"le", "window_argmax", "reshape", "exp", "reduce_sum", "cast"}
    assert forward["le"].type == "bool[2,4,8,8]" and "relu" in forward["le"].why
    # max_pool2d keeps the offset of each window's max: the gradient goes back there
    argmax = forward["window_argmax"]
    assert argmax.type == "i64[2,4,4,4]" and argmax.bytes == 2 * 4 * 4 * 4 * 8
    assert "backward of window_gather" in argmax.why and "max_pool2d" in argmax.why
    # flatten is a view: the pooled values are kept for linear's weight gradient, and counted once
    flat = forward["reshape"]
    assert flat.is_view and flat.base.op == "window_gather" and "a view of" not in flat.why
    assert "for the gradient of primals_3" in flat.why
    assert not {"conv2d", "add", "window_gather", "matmul"} & set(forward)

    inputs = {v.name: v for v in values if v.is_input}
    # x for the kernel's gradient and w for flatten's; the conv kernel itself is not needed
    # (x gets no gradient), nor are the labels (their one-hot matrix is saved instead)
    assert set(inputs) == {"primals_5", "primals_3"}
    assert "conv2d" in inputs["primals_5"].why and "for the gradient of primals_1" in inputs["primals_5"].why

    expected = sum(v.bytes for v in values if not v.is_input)
    assert saved_bytes(g) == expected


# -- the report, pinned -------------------------------------------------------------------------------

def tiny(w1, w2, x, y):
    h = O.relu(x @ w1)
    return O.mse_loss(h @ w2, y)


A = tiny.__code__.co_firstlineno          # the `def` line: where the inputs come from
B, D = A + 1, A + 2                       # relu(x @ w1), mse_loss(h @ w2, y)

TINY_REPORT = f"""\
What the forward of tiny_joint saves for the backward, and why.

A saved value is computed by the forward and read by the backward: it stays in memory
from the moment the forward makes it until the backward's last read of it.

Saved by the forward (3 values):
  t1  bool[5,4]  20 B  test_saved.py:{B}  read by the backward of where (t15 = where(t1, 0.0, t12)) in relu
  t2  f32[5,4]   80 B  test_saved.py:{B}  read by the backward of matmul (t13 = permute(t2, dims=(1, 0))), for the gradient of primals_2
  t4  f32[5,2]   40 B  test_saved.py:{D}  read by the backward of mul (t9 = mul(t8, t4)) in mse_loss

Inputs the backward reads (2; kept for the whole step anyway):
  primals_2  f32[4,2]  32 B  test_saved.py:{A}  read by the backward of matmul (t11 = permute(primals_2, dims=(1, 0)))
  primals_3  f32[5,3]  60 B  test_saved.py:{A}  read by the backward of matmul (t16 = permute(primals_3, dims=(1, 0))), for the gradient of primals_1

Total saved: 140 B computed by the forward (a view counts as its source, once); 92 B of inputs.
"""

TINY_SPECS = (O.spec((3, 4)), O.spec((4, 2)), O.spec((5, 3)), O.spec((5, 2)))


def test_saved_report_of_a_two_layer_model_is_pinned():
    g = joint(tiny, *TINY_SPECS, argnums=(0, 1))
    assert saved_report(g) == TINY_REPORT


def test_saved_report_after_remat_names_what_is_recomputed_and_compares():
    g = joint(tiny, *TINY_SPECS, argnums=(0, 1))
    r = rematerialize(g)
    text = saved_report(r, before=g)
    # relu's mask and output are recomputed from the pre-activation t0, which is kept instead
    assert f"t0  f32[5,4]  80 B  test_saved.py:{B}  read in the backward to recompute t1 " in text
    assert "read in the backward to recompute t2 " in text
    assert text.endswith("Rematerialization: 140 B saved before, 120 B after "
                         "(inputs the backward reads: 92 B before, 92 B after).\n")


# -- rematerialization --------------------------------------------------------------------------------

NEVER_RECOMPUTED = ("matmul", "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "reduce_sum", "reduce_max",
                    "argmax", "window_argmax", "window_gather", "window_scatter", "window_sum",
                    "window_sum_transpose", "rand", "reshape", "permute", "slice", "pad", "cat")


def check_remat(g, args):
    """Rematerialize g; check it computes the same bits, keeps no more bytes, and only adds
    copies of recomputable nodes. Returns the new graph."""
    r = rematerialize(g)
    before = saved_bytes(g) + saved_input_bytes(g)
    assert saved_bytes(r) <= saved_bytes(g) and saved_bytes(r) + saved_input_bytes(r) <= before

    want, got = run_graph(g, args), run_graph(r, args)
    for w, x in zip(want, got):
        assert w.dtype == x.dtype and np.array_equal(w, x)

    counts, new_counts = g.op_counts(), r.op_counts()
    for op in NEVER_RECOMPUTED:
        assert new_counts.get(op, 0) == counts.get(op, 0), op
    added = {op for op in new_counts if new_counts[op] > counts.get(op, 0)}
    assert all(REGISTRY[op].family == "pointwise" or op in ("iota", "expand") for op in added)
    copies = [n for n in r.nodes if n.role == "backward" and recomputable(n)]
    assert all(n.op != "rand" for n in copies)

    namespace = {}                                   # the remat'd program still prints and runs
    exec(str(r), namespace)  # noqa: S102
    for w, x in zip(want, namespace[r.name](*args)):
        assert np.array_equal(w, x)
    return r


@pytest.mark.parametrize("name", ["logreg", "mlp", "lenet", "resnet"])
def test_remat_of_zoo_models_keeps_every_value_and_gradient_and_saves_less(name, rng):
    model = zoo.get(name)
    params = model.init(rng)
    params = [p + nonzero(rng, p.shape, 0.01, 0.1, np.float32) for p in params]   # no zero biases
    batch = 8
    specs = model.specs(params, batch)
    g = joint(model.loss, *specs, argnums=tuple(range(len(params))))
    x = rng.standard_normal(specs[-2].shape).astype(np.float32)
    r = check_remat(g, params + [x, labels(rng, batch)])
    assert saved_bytes(r) < saved_bytes(g)          # every zoo model has something cheap to recompute
    assert rematerialize(r).op_counts() == r.op_counts()       # a fixed point


def relu_times_input(w, x, s):
    h = x @ w
    return O.sum(O.relu(h) * h) * s          # (times s: with a seed of 1, d/dh is 2·relu(h), which CSE finds)


def test_remat_recomputes_relus_mask_from_a_value_saved_anyway(rng):
    g = joint(relu_times_input, O.spec((3, 4)), O.spec((5, 3)), O.spec(()), argnums=(0,))
    assert sorted(v.node.op for v in saved_values(g) if not v.is_input) == ["le", "matmul", "where"]
    r = check_remat(g, [nonzero(rng, (3, 4), dtype=np.float32), nonzero(rng, (5, 3), dtype=np.float32),
                        np.float32(1.5 + rng.random())])
    assert [v.node.op for v in saved_values(r) if not v.is_input] == ["matmul"]
    assert saved_bytes(g) == 20 + 80 + 80 and saved_bytes(r) == 80
    # the copies come right before their first backward reader, after the whole forward
    mask = next(n for n in r.nodes if n.op == "le" and n.role == "backward")
    at = r.nodes.index(mask)
    first_reader = next(k for k, n in enumerate(r.nodes) if mask in n.inputs)
    assert max(k for k, n in enumerate(r.nodes) if n.role == "forward" and n.op != "const") < at
    assert all(n.role == "backward" and recomputable(n) for n in r.nodes[at:first_reader])


def through_an_input(w, x, c):
    t = c + 1.0                       # recomputing t would read c, which the backward does not read
    return O.sum(O.exp(t @ w) + x)


def through_a_saved_input(w, x, c):
    t = c + 1.0
    return O.sum(O.exp(t @ w) * c * c)   # now the backward reads c anyway (for c * c)


def test_remat_counts_an_input_it_would_start_reading(rng):
    specs = (O.spec((3, 3)), O.spec((5, 3)), O.spec((5, 3)))
    args = [nonzero(rng, s.shape, dtype=np.float32) for s in specs]
    g = joint(through_an_input, *specs, argnums=(0,))
    r = check_remat(g, args)
    assert saved_bytes(r) == saved_bytes(g) and "add" in {v.node.op for v in saved_values(r)}
    assert "primals_3" not in by_name(r)

    g = joint(through_a_saved_input, *specs, argnums=(0,))
    assert "primals_3" in by_name(g) and "add" in {v.node.op for v in saved_values(g)}
    r = check_remat(g, args)
    assert "add" not in {v.node.op for v in saved_values(r)} and saved_bytes(r) < saved_bytes(g)


def dropout_model(w, x):
    return O.sum(O.tanh(O.dropout(O.relu(x @ w), 0.3, seed=7)))


def test_a_dropout_mask_is_drawn_again_in_the_backward_not_saved(rng):
    """rand is a pure function of (seed, index): the keep-mask ge(rand(seed), p) is recomputed in
    the backward from the seed (regenerate_random, run by every compile), and the values agree."""
    g = C.simplify(C.grad_graph(C.trace(dropout_model, O.spec((3, 4)), O.spec((5, 3))), (0,)))
    assert "ge" in [v.node.op for v in saved_values(g)]                  # simplify alone saves the mask
    r = regenerate_random(g)
    assert "ge" not in [v.node.op for v in saved_values(r)]
    assert saved_bytes(g) - saved_bytes(r) == 5 * 4                      # a bool[5,4] mask (the seed: a constant)
    assert [n.role for n in r.nodes if n.op == "rand"] == ["forward", "backward"]
    args = [nonzero(rng, (3, 4), dtype=np.float32), nonzero(rng, (5, 3), dtype=np.float32)]
    for got, want in zip(run_graph(r, args), run_graph(g, args)):
        assert np.array_equal(got, want)
    assert str(joint(dropout_model, O.spec((3, 4)), O.spec((5, 3)), argnums=(0,))) == str(r)


# -- wired into C.compile -----------------------------------------------------------------------------

def test_compile_with_remat_reports_saved_bytes_and_dumps_05_saved(rng, tmp_path):
    model = zoo.get("mlp")
    params = model.init(rng)
    specs = model.specs(params, 4)
    args = params + [rng.standard_normal((4, 64)).astype(np.float32), labels(rng, 4)]
    argnums = tuple(range(len(params)))
    plain = C.compile(model.loss, *specs, grad_argnums=argnums, backend="reference")
    remat = C.compile(model.loss, *specs, grad_argnums=argnums, backend="reference", remat=True)
    (v0, g0), (v1, g1) = plain(*args), remat(*args)
    assert np.array_equal(v0, v1) and all(np.array_equal(a, b) for a, b in zip(g0, g1))

    r0, r1 = plain.report(), remat.report()
    assert "saved_bytes_before_remat" not in r0 and r0["saved_bytes"] == saved_bytes(plain.graph)
    assert r1["saved_bytes_before_remat"] == r0["saved_bytes"] and r1["saved_bytes"] < r0["saved_bytes"]
    assert "remat" in r1["compile_seconds"]

    remat.dump(tmp_path)
    text = (tmp_path / "05_saved.txt").read_text()
    assert text == saved_report(remat.graph, before=plain.graph)
    assert f"Rematerialization: {r0['saved_bytes']} B saved before, {r1['saved_bytes']} B after" in text
    plain.dump(tmp_path / "plain")
    assert "Rematerialization" not in (tmp_path / "plain" / "05_saved.txt").read_text()
    assert sorted(os.listdir(tmp_path / "plain")).count("05_saved.txt") == 1


def test_remat_program_runs_on_the_triton_interpreter(rng):
    model = zoo.get("mlp")
    params = model.init(rng)
    specs = model.specs(params, 4)
    args = params + [rng.standard_normal((4, 64)).astype(np.float32), labels(rng, 4)]
    argnums = tuple(range(len(params)))
    want = C.compile(model.loss, *specs, grad_argnums=argnums, backend="reference")(*args)
    got = C.compile(model.loss, *specs, grad_argnums=argnums, backend="interpret", remat=True)(*args)
    assert rel_error(got[0], want[0]) < 1e-5
    for a, b in zip(got[1], want[1]):
        assert rel_error(a, b) < 1e-4
