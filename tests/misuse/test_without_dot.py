"""Without graphviz's `dot` (an optional tool), every picture degrades the same way from every
entry point: its .dot source is written where the picture would be, the install advice is
printed once per process, and nothing crashes (compiler/render.py: find_dot is the one place
that looks for the program)."""
import os
import subprocess
import sys

import compiler as C
import ops as O
from compiler import render
from compiler.inspect import scalar_view
from runtime.tutorial import Tutorial
from tests.helpers import nonzero

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADVICE = "apt-get install graphviz"


def loss(x, w):
    return O.mean(O.tanh(x @ w))


def _program():
    return C.compile(loss, O.spec((4, 3)), O.spec((3, 2)), grad_argnums=(1,), backend="reference")


def _is_dot_source(path):
    with open(path) as f:
        return f.read().startswith("digraph")


def test_program_render_writes_dot_sources_and_gives_the_advice_once(tmp_path, without_dot, capsys):
    program = _program()
    paths = program.render(str(tmp_path / "first"))
    assert sorted(os.path.basename(p) for p in paths) == ["backward.dot", "forward.dot", "kernels.dot", "memory.svg"]
    assert all(_is_dot_source(p) for p in paths if p.endswith(".dot"))
    assert not [f for f in os.listdir(tmp_path / "first") if f.endswith(".svg") and f != "memory.svg"]
    program.render(str(tmp_path / "second"))                        # a second picture: no second advice
    C.trace(loss, O.spec((4, 3)), O.spec((3, 2))).render(str(tmp_path / "graph.png"))
    out = capsys.readouterr().out
    assert out.count(ADVICE) == 1 and "brew install graphviz" in out and "conda" in out
    assert "forward.dot was written instead of" in out and "forward.svg" in out
    assert os.path.exists(tmp_path / "graph.dot") and not os.path.exists(tmp_path / "graph.png")


def test_program_dump_says_why_its_pictures_are_dot_files(tmp_path, without_dot, capsys):
    written = _program().dump(tmp_path)
    names = {os.path.basename(p) for p in written}
    assert {"forward.dot", "backward.dot", "kernels.dot", "00_trace.py"} <= names
    assert ADVICE in capsys.readouterr().out


def test_jupyter_falls_back_to_the_text_of_the_program(without_dot):
    program = _program()
    graph = C.trace(loss, O.spec((4, 3)), O.spec((3, 2)))
    assert graph._repr_svg_() is None
    assert list(graph._repr_mimebundle_()) == ["text/plain"] and "matmul" in graph._repr_mimebundle_()["text/plain"]
    assert list(program._repr_mimebundle_()) == ["text/plain"]


def test_the_value_pictures_fall_back_too(tmp_path, rng, without_dot, capsys):
    a, b, c = (nonzero(rng, ()) for _ in range(3))
    path = scalar_view(lambda a, b, c: O.tanh(a * b + c), a, b, c, path=tmp_path / "neuron.svg")
    assert path == str(tmp_path / "neuron.dot") and _is_dot_source(path)
    assert ADVICE in capsys.readouterr().out


def test_dot_missing_from_path_is_found_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))                       # a PATH with no programs at all
    monkeypatch.delenv(render.DOT_PROGRAM, raising=False)
    monkeypatch.setattr(render, "_told_to_install", False)
    assert render.find_dot() is None
    path = render.render_dot(render.forward_dot(C.trace(loss, O.spec((4, 3)), O.spec((3, 2)))),
                             str(tmp_path / "out" / "g.svg"))
    assert path == str(tmp_path / "out" / "g.dot") and _is_dot_source(path)
    assert "graphviz's `dot` program is not installed" in capsys.readouterr().out


def test_chainrule_dot_names_the_program_or_turns_it_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render, "_told_to_install", False)
    monkeypatch.setenv(render.DOT_PROGRAM, "none")
    assert render.find_dot() is None
    monkeypatch.setenv(render.DOT_PROGRAM, str(tmp_path / "no_such_dot"))
    assert render.find_dot() is None
    render.render_dot("digraph g { a -> b; }", str(tmp_path / "g.svg"))
    assert "no_such_dot" in capsys.readouterr().out and (tmp_path / "g.dot").exists()


def test_a_dot_that_fails_leaves_the_source_and_its_error(tmp_path, monkeypatch, capsys):
    failing = tmp_path / "dot"
    failing.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setattr(render, "find_dot", lambda: str(failing))
    path = render.render_dot("digraph g { a -> b; }", str(tmp_path / "g.svg"))
    assert path == str(tmp_path / "g.dot") and _is_dot_source(path) and not (tmp_path / "g.svg").exists()
    assert "dot failed: syntax error in line 1" in capsys.readouterr().out


def test_a_tutorial_shows_the_dot_file_where_the_picture_would_be(tmp_path, monkeypatch, without_dot, capsys):
    monkeypatch.setenv("CHAINRULE_TUTORIAL_OUT", str(tmp_path))
    tut = Tutorial("00_without_dot")
    path = tut.show(C.trace(loss, O.spec((4, 3)), O.spec((3, 2))), "forward")
    assert path.endswith("forward.dot") and _is_dot_source(path)
    pictures = _program().render(tut.path("step"))
    kernels = tut.show_file(tut.picture(pictures, "kernels"))
    assert kernels.endswith("kernels.dot")
    out = capsys.readouterr().out
    assert "forward.dot (graphviz source" in out and "kernels.dot (graphviz source" in out and out.count(ADVICE) == 1


def test_the_graph_command_writes_dot_sources_without_graphviz(tmp_path):
    env = dict(os.environ, CHAINRULE_DOT="none", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "graph", "logreg", "--out", str(tmp_path),
                             "--batch-size", "8"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == ["backward.dot", "forward.dot", "kernels.dot", "memory.svg"]
    assert result.stdout.count(ADVICE) == 1 and "wrote" in result.stdout
    assert all(_is_dot_source(tmp_path / f"{name}.dot") for name in ("forward", "backward", "kernels"))
