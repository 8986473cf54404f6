"""Pictures (compiler/render.py): the DOT text is pinned on a tiny graph, and real graphviz
output is checked for what a learner relies on: a box per value, an arrow per use, a
cluster per kernel, the user's source line under the mouse, and a .dot file (never a
crash) where graphviz is missing."""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import compiler as C
import ops as O
from compiler import render
from compiler.saved import saved_values
from runtime.training.zoo import ZOO
from tests.helpers import needs_dot


def two_ops(x, w):
    return O.exp(x @ w)


PINNED = r'''digraph "two_ops" {
  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, ranksep=0.32];
  node [fontname="Helvetica", fontsize=10, style="filled,rounded", shape=box, penwidth=0.8];
  edge [color="#94a3b8", arrowsize=0.6];
  n0 [label="x\nf32[2,3]", shape="ellipse", fillcolor="#f1f5f9", tooltip="x: f32[2,3]\ntest_render.py:22: def two_ops(x, w):"];
  n1 [label="w\nf32[3,2]", shape="ellipse", fillcolor="#bbf7d0", penwidth="1.6", tooltip="w: f32[3,2]\ntest_render.py:22: def two_ops(x, w):\na parameter: the step computes its gradient"];
  n2 [label="matmul\nf32[2,2]", fillcolor="#dbeafe", tooltip="t0 = matmul(x, w)\ntest_render.py:23: return O.exp(x @ w)"];
  n3 [label="loss\nexp\nf32[2,2]", fillcolor="#fde68a", penwidth="2", tooltip="t1 = exp(t0)\ntest_render.py:23: return O.exp(x @ w)"];
  n0 -> n2;
  n1 -> n2;
  n2 -> n3;
}
'''


def test_the_dot_text_of_a_two_op_graph_is_pinned():
    graph = C.trace(two_ops, O.spec((2, 3)), O.spec((3, 2)))
    assert render.forward_dot(graph, params=[graph.inputs[1]], output_name="loss") == PINNED


def _svg(path):
    root = ET.parse(path).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    groups = root.findall(".//svg:g", ns)
    return ({kind: [g for g in groups if g.get("class") == kind] for kind in ("node", "edge", "cluster")},
            open(path).read())


def _step(name, batch=4):
    model = ZOO[name]
    params = model.init(np.random.default_rng(0))
    return C.compile(model.loss, *model.specs(params, batch), grad_argnums=tuple(range(len(params))),
                     backend="reference")


@needs_dot
def test_a_forward_svg_has_a_box_per_value_an_arrow_per_use_and_source_lines_as_tooltips(tmp_path):
    step = _step("mlp")
    graph = step.forward
    path = render.render_dot(render.forward_dot(graph, collapse=None), str(tmp_path / "forward.svg"))
    parts, text = _svg(path)
    drawn = [n for n in graph.nodes if not n.is_scalar_const]
    uses = {(i, n) for n in graph.nodes for i in n.inputs if not i.is_scalar_const}
    assert len(parts["node"]) == len(drawn)
    assert len(parts["edge"]) == len(uses)
    assert len(parts["cluster"]) == 6            # linear, relu, linear, relu, linear, cross_entropy: a cluster a call
    line = next(n for n in graph.nodes if n.op == "matmul").source.line
    assert f"zoo.py:{line}" in text and "O.linear" in text        # hovering shows the user's code


@needs_dot
def test_the_kernels_view_draws_one_cluster_per_kernel_naming_its_file(tmp_path):
    step = _step("lenet")
    schedule = step.schedule
    path = render.render_dot(render.kernels_dot(step.graph, schedule, collapse=None), str(tmp_path / "k.svg"))
    parts, text = _svg(path)
    assert len(parts["cluster"]) == len(schedule.kernels)
    for kernel in schedule.kernels:
        assert f"kernels/{kernel.index:02d}_{kernel.label}.py" in text
        assert kernel.name in text


def test_the_backward_view_shows_sums_seed_saved_values_and_named_gradients():
    def f(w, x):
        h = O.tanh(x @ w)
        return O.sum(h * h + h)                # h is used three times: its gradient is a sum
    joint = C.simplify(C.grad_graph(C.trace(f, O.spec((3, 2)), O.spec((4, 3))), (0,)))
    text = render.backward_dot(joint, collapse=None)
    assert text.count('label="Σ"') == 2                          # three gradients of h: two additions
    assert "∂loss/∂w" in text and "seed: ∂loss/∂loss = 1" in text
    saved = {(v.node, r) for v in saved_values(joint) for r in v.readers}
    dashed = re.findall(r"(n\d+) -> (n\d+) \[[^]]*dashed", text)
    assert saved and {(f"n{a.id}", f"n{b.id}") for a, b in saved} <= set(dashed)


def test_large_graphs_collapse_each_composite_call_into_one_box_unless_expanded():
    graph = _step("resnet").forward
    full = render.forward_dot(graph, collapse=None)
    boxes = render.forward_dot(graph, collapse=1)
    opened = render.forward_dot(graph, collapse=1, expand={"batch_norm"})
    count = lambda text: len(re.findall(r"^\s+[ng]\d+ \[", text, re.MULTILINE))      # noqa: E731
    calls = boxes.count('peripheries="2"')                      # one double-rimmed box per call
    assert count(boxes) < count(full) and calls > 0 and 'peripheries="2"' not in full
    assert "batch_norm\\n×" in boxes and "batch_norm\\n×" not in opened
    assert 0 < opened.count('peripheries="2"') < calls and count(boxes) < count(opened) < count(full)
    assert render.forward_dot(graph) == (boxes if graph.num_ops > render.AUTO_COLLAPSE else full)
    joint = _step("resnet").graph
    text = render.backward_dot(joint, collapse=1)
    declared = set(re.findall(r"^\s+([ng]\d+) \[", text, re.MULTILINE))
    used = {k for edge in re.findall(r"^\s+([ng]\d+) -> ([ng]\d+)", text, re.MULTILINE) for k in edge}
    assert used <= declared                        # every arrow joins boxes that are drawn


def test_without_dot_a_dot_file_is_written_with_install_advice(tmp_path, without_dot, capsys):
    graph = C.trace(two_ops, O.spec((2, 3)), O.spec((3, 2)))
    written = graph.render(str(tmp_path / "g.svg"))
    assert written == str(tmp_path / "g.dot") and os.path.exists(written)
    assert not os.path.exists(tmp_path / "g.svg")
    assert "apt-get install graphviz" in capsys.readouterr().out
    assert graph._repr_svg_() is None and "image/svg+xml" not in graph._repr_mimebundle_()


def test_a_suffix_graphviz_cannot_write_is_a_clear_error(tmp_path):
    graph = C.trace(two_ops, O.spec((2, 3)), O.spec((3, 2)))
    with pytest.raises(ValueError, match="g.gif"):
        graph.render(str(tmp_path / "g.gif"))
    assert not os.listdir(tmp_path)


@needs_dot
def test_jupyter_shows_graphs_and_programs_as_svg():
    graph = C.trace(two_ops, O.spec((2, 3)), O.spec((3, 2)))
    bundle = graph._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith("<?xml") and "matmul" in bundle["text/plain"]
    assert "<svg" in _step("logreg")._repr_mimebundle_()["image/svg+xml"]


@needs_dot
def test_chainrule_graph_writes_the_four_pictures(tmp_path):
    out = tmp_path / "pictures"
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "graph", "logreg", "--out", str(out),
                             "--batch-size", "8"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(out)) == ["backward.svg", "forward.svg", "kernels.svg", "memory.svg"]
    for name in ("forward", "backward", "kernels"):
        parts, _ = _svg(out / f"{name}.svg")
        assert parts["node"]
    ET.parse(out / "memory.svg")


def test_a_named_block_collapses_into_one_box_and_expands_on_request():
    """`with O.scope("block")` names a layer (a residual block here): collapsed at depth 1 it is
    one box; expanded, its composites (conv2d, relu) are boxes of their own at depth 2."""
    def f(x, w1, w2):
        with O.scope("residual_block"):
            h = O.relu(O.conv2d(x, w1, padding=1))
            h = O.relu(O.conv2d(h, w2, padding=1) + x)
        return O.mean(h)
    graph = C.trace(f, O.spec((2, 3, 5, 5)), O.spec((3, 3, 3, 3)), O.spec((3, 3, 3, 3)))
    block = render.forward_dot(graph, collapse=1)
    assert block.count('peripheries="2"') == 1 and "residual_block\\n×" in block
    opened = render.forward_dot(graph, collapse=1, expand={"residual_block"})
    assert 'peripheries="2"' not in opened
    inner = render.forward_dot(graph, collapse=2)
    assert inner.count('peripheries="2"') == 2 and "residual_block\\n×" not in inner   # the two relus


def test_a_bare_joint_graph_keeps_the_users_names_and_draws_the_seed():
    joint = C.grad_graph(C.trace(lambda x: x * x, O.spec((), "float64")), argnums=(0,))
    text = render.backward_dot(joint)
    assert "x\\nprimals_1" in text                    # the user's name above autodiff's
    assert text.count("seed: ∂loss/∂loss = 1") == 1 and text.count('style="dotted"') == 2   # into both muls
    assert C.simplify(joint).user_names == ["x"]


def test_a_training_step_is_drawn_as_one_picture_with_the_update_in_its_own_colour(tmp_path):
    from ops import layers as L

    model = L.Sequential(L.Flatten(), L.Dense(64, 10), input_shape=(1, 8, 8)).init(0)
    step = C.compile_train_step(model, O.cross_entropy, O.optim.Adam(0.01), O.spec((4, 1, 8, 8)),
                                O.spec((4,), "int64"), backend="reference")
    paths = step.program.render(str(tmp_path), fmt="dot", quiet=True)
    assert sorted(os.path.basename(p) for p in paths) == ["kernels.dot", "memory.svg", "step.dot"]
    text = open(tmp_path / "step.dot").read()
    assert render.UPDATE in text and render.BACKWARD in text and render.FORWARD in text
    assert "new_dense_weight" in text and "seed: ∂loss/∂loss = 1" in text
    assert step.program.forward.output_names[:3] == ["loss", "logits", "new_dense_weight"]


def test_the_seed_enters_the_backward_where_simplify_folded_the_one_away():
    def f(w, x):
        return O.sum(O.exp(x @ w))
    joint = C.simplify(C.grad_graph(C.trace(f, O.spec((3, 2)), O.spec((4, 3))), argnums=(0,)))
    (taker,) = render.seed_takers(joint)
    assert taker.op == "matmul" and taker.role == "backward"          # not the permute of x: a view
    descent = C.trace(lambda x: x - 0.1 * C.grad(lambda x: O.sum(x * x))(x), O.spec((3,)))
    assert render.seed_takers(descent) == []      # output 0 is the new x, not a value differentiated
