"""The value pictures (compiler/inspect.py): micrograd's scalar view, the node-by-node
gradient check, and the cotangents autodiff hands back for them."""
import html
from pathlib import Path

import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from compiler.codegen import pointwise
from compiler.inspect import (GREEN, RED, YELLOW, describe, gradient_check_view, node_errors, relative_error,
                              scalar_values, scalar_view)
from ops.printer import value_names
from ops.evaluate import run_graph, run_graph_values
from tests.helpers import needs_dot, nonzero


def neuron(a, b, c):               # micrograd's classic: a*b + c, then tanh
    return O.tanh(a * b + c)


def mlp(w1, b1, w2, x):
    h = O.tanh(x @ w1 + b1)
    return O.mean(O.relu(h @ w2))


def svg_text(path):
    return html.unescape(Path(path).read_text())        # graphviz writes '-' as &#45;


def drawn(graph):
    return [n for n in graph.nodes if not n.is_scalar_const]   # a scalar is written into its user's label


def _torch_neuron(graph, a, b, c):
    """{node of the traced neuron: the torch tensor of its value}, after backward (.grad
    kept), and the output tensor."""
    ta, tb, tc = (torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for v in (a, b, c))
    product = ta * tb
    total = product + tc
    for t in (product, total):
        t.retain_grad()
    out = torch.tanh(total)
    out.backward()
    (mul,), (add,), (tanh,) = ([n for n in graph.nodes if n.op == op] for op in ("mul", "add", "tanh"))
    want = dict(zip(graph.inputs, (ta, tb, tc)))
    want.update({mul: product, add: total, tanh: out})
    return want, out


def test_scalar_values_match_torch(rng):
    a, b, c = (nonzero(rng, ()) for _ in range(3))            # 0-d float64 arrays
    graph, data, grads = scalar_values(neuron, a, b, c)
    want, out = _torch_neuron(graph, a, b, c)
    for node, t in want.items():
        np.testing.assert_allclose(data[node], t.item(), rtol=1e-12)
        np.testing.assert_allclose(grads[node], 1.0 if t is out else t.grad.item(), rtol=1e-12)


@needs_dot
def test_scalar_view_shows_the_numbers(tmp_path, rng):
    a, b, c = (nonzero(rng, ()) for _ in range(3))
    path = scalar_view(neuron, a, b, c, path=tmp_path / "neuron.svg")
    assert path == str(tmp_path / "neuron.svg")
    graph, data, grads = scalar_values(neuron, a, b, c)
    text = svg_text(path)
    for node in drawn(graph):
        assert f"data {float(data[node]):.4g}" in text
        assert f"grad {float(grads[node]):.4g}" in text
    assert "grad 1\n" in text or "grad 1<" in text                 # the output's own gradient
    assert text.count('class="node"') == len(drawn(graph))


def test_scalar_view_arrays_and_data_only_nodes(tmp_path, rng):
    def f(x, w, k):
        return O.sum(O.tanh(x * w) * x) + O.sum(O.to(k, "float64") * x)

    x, w = nonzero(rng, (3,)), nonzero(rng, (2, 3))
    k = np.array([1, 2, 3], dtype=np.int64)
    graph, data, grads = scalar_values(f, x, w, k)
    (to,) = [n for n in graph.nodes if n.op == "cast"]
    assert graph.inputs[2] not in grads and to not in grads       # no gradient flows to an integer input
    assert graph.inputs[0] in grads and graph.inputs[1] in grads
    assert all(n in data for n in graph.nodes)
    text = svg_text(scalar_view(f, x, w, k, path=tmp_path / "f.svg"))
    assert f"data {describe(x)}" in text and f"grad {describe(grads[graph.inputs[0]])}" in text   # 3 elements
    assert "data mean " in text and "grad mean " in text          # 6 elements: mean ±std
    assert text.count("data [1, 2, 3]") == 2                      # k and its cast: data only


def test_scalar_view_needs_a_scalar_output(tmp_path, rng):
    with pytest.raises(C.GradientError, match="one scalar"):
        scalar_view(lambda x: O.tanh(x), nonzero(rng, (3,)), path=tmp_path / "x.svg")


def test_describe():
    assert describe(np.float64(0.881373587)) == "0.8814"
    assert describe(np.array([0.1, -2.3])) == "[0.1, -2.3]"
    assert describe(np.array([[1.0, 2.0], [3.0, 4.0]])) == "[[1, 2], [3, 4]]"
    assert describe(np.full(10, 2.0)) == "mean 2 ±0"
    assert describe(np.array([True, False, True, True, False])) == "3/5 true"


def test_keep_cotangents(rng):
    """The extra outputs are d(value)/d(node); an input's is its gradient; the default joint
    graph is untouched."""
    x, w = nonzero(rng, (4, 3)), nonzero(rng, (3, 2))
    graph = C.trace(lambda x, w: O.mean(O.tanh(x @ w) * x[:, :2]), x, w)
    plain = C.grad_graph(graph, (0, 1))
    joint = C.grad_graph(graph, (0, 1), keep_cotangents=True)
    assert not hasattr(plain, "cotangent_of")
    assert str(C.grad_graph(graph, (0, 1))) == str(plain)
    outputs = run_graph(joint, [x, w])
    position = {graph.nodes[k]: p for k, p in joint.cotangent_of}
    for i, node in enumerate(graph.inputs):                   # outputs: value, grad_x, grad_w, cotangents
        np.testing.assert_array_equal(outputs[position[node]], outputs[1 + i])
    values = run_graph_values(graph, [x, w])
    for node, p in position.items():
        assert outputs[p].shape == node.shape
    assert outputs[position[graph.outputs[0]]] == 1.0
    assert len(joint.output_names) == len(joint.outputs)
    assert set(values) == set(graph.nodes)


@needs_dot
def test_gradient_check_of_an_mlp_is_green(tmp_path, rng):
    args = [nonzero(rng, (3, 4)), nonzero(rng, (4,)), nonzero(rng, (4, 2)), nonzero(rng, (5, 3))]
    path, report = gradient_check_view(mlp, *args, path=tmp_path / "check.svg")
    assert path == str(tmp_path / "check.svg")
    assert report.first_bad is None and report.ok
    assert max(report.errors.values()) < 1e-4
    assert set(report.kinds.values()) == {"value", "gradient"}
    names = value_names(report.graph)
    assert all(names[o] in report.errors for o in report.graph.outputs)     # the loss and every gradient
    svg = Path(path).read_text()
    assert svg.count('class="node"') == len(drawn(report.graph))
    assert GREEN in svg and RED not in svg and YELLOW not in svg
    assert not report.culprits and max(report.local_errors.values()) < 1e-5
    assert report.worst[0] in svg_text(path)                                # the title names the worst node


def test_gradient_check_finds_a_planted_bug(tmp_path, rng, monkeypatch):
    """tanh's derivative is 1 - t*t: the only `sub` is in the backward. Break its kernel
    (a new expression is new kernel text, so the cache serves a new kernel)."""
    monkeypatch.setitem(pointwise.EXPRESSIONS, "sub", "{0} + {1}")

    def net(w, x):
        return O.mean(O.tanh(x @ w))

    path, report = gradient_check_view(net, nonzero(rng, (3, 4)), nonzero(rng, (5, 3)), path=tmp_path / "bug.dot")
    graph = report.graph
    names = value_names(graph)
    subs = [n for n in graph.nodes if n.op == "sub"]
    assert len(subs) == 1 and subs[0].role == "backward"
    bad = names[subs[0]]
    assert report.first_bad == bad and report.kinds[bad] == "gradient"
    assert report.culprits == [bad]                            # downstream nodes compute right from wrong inputs
    assert all(report.errors[names[n]] < 1e-5 for n in graph.nodes[:graph.nodes.index(subs[0])]
               if names[n] in report.errors)
    grads = [names[o] for o in graph.outputs[1:]]
    assert all(report.errors[g] > 1e-3 for g in grads)        # the gradients downstream are wrong too
    dot = Path(path).read_text()
    (line,) = [ln for ln in dot.splitlines() if f'tooltip="gradient: {bad} = sub(' in ln]
    assert f'fillcolor="{RED}"' in line
    assert f"first above 1e-03: {bad}" in dot


def test_node_errors_without_a_picture(rng):
    """Inputs of at most 1 keep tanh away from saturation, where 1 - t*t cancels in float32
    (an honest yellow); the local errors are tiny in any case."""
    report = node_errors(neuron, *(nonzero(rng, (), high=1.0) for _ in range(3)))
    assert report.ok and report.errors and max(report.errors.values()) < 1e-4
    assert not report.culprits and max(report.local_errors.values()) < 1e-5
    assert set(report.errors) == set(report.local_errors)


def test_saturated_tanh_is_inaccurate_but_no_kernel_is_wrong():
    a, b, c = np.float64(2.0), np.float64(1.9), np.float64(1.7)     # tanh(5.5): 1 - t*t ≈ 6.7e-5
    report = node_errors(neuron, a, b, c)
    assert max(report.errors.values()) > 1e-5                       # float32 cannot do better here
    assert not report.culprits


def test_relative_error():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert relative_error(np.array([True, False]), np.array([True, True])) == 0.5
    assert relative_error(np.array([np.nan, 1.0]), np.array([1.0, 1.0])) == np.inf      # poison left behind
    assert relative_error(np.array([np.inf]), np.array([np.inf])) == 0.0
    assert relative_error(np.float32(1.0 + 2 ** -20), np.float64(1.0)) == pytest.approx(2 ** -20)


def test_without_graphviz_a_dot_file_is_written(tmp_path, rng, without_dot, capsys):
    a, b, c = (nonzero(rng, ()) for _ in range(3))
    path = scalar_view(neuron, a, b, c, path=tmp_path / "neuron.svg")
    assert path == str(tmp_path / "neuron.dot")
    assert Path(path).read_text().startswith("digraph")
    assert not (tmp_path / "neuron.svg").exists()
    assert "graphviz" in capsys.readouterr().out
    path, report = gradient_check_view(neuron, a, b, c, path=tmp_path / "check.png")
    assert path == str(tmp_path / "check.dot") and Path(path).exists() and report.ok
