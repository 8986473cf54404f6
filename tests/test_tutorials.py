"""Every tutorial runs as a script under the interpreter, its exercises' checks pass with the
reference answers, and it opens as a notebook (jupytext's percent format)."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = sorted(glob.glob(os.path.join(ROOT, "tutorials", "[0-9][0-9]_*.py")))
NAMES = [os.path.basename(p)[:-3] for p in TUTORIALS]
SECONDS = 120                 # each must run in under 2 minutes without a GPU


def test_there_are_twelve_tutorials_numbered_in_order():
    assert [n[:2] for n in NAMES] == [f"{k:02d}" for k in range(1, 13)]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_the_tutorial_runs_and_every_exercise_is_correct(name, tmp_path):
    env = dict(os.environ, CHAINRULE_TUTORIAL_OUT=str(tmp_path), MPLBACKEND="Agg", CHAINRULE_BACKEND="interpret",
               PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tutorials", f"{name}.py")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=2 * SECONDS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"{name}: all ") and "exercises correct" in last
    count = int(last.split("all ")[1].split()[0])
    assert count >= 2
    pictures = [os.path.join(folder, f) for folder, _, files in os.walk(tmp_path / name) for f in files
                if f.endswith((".svg", ".png", ".dot"))]          # .dot: a graph, without graphviz
    assert pictures and all(os.path.getsize(p) > 0 for p in pictures), "a tutorial shows pictures"
    assert result.stdout.count("[picture] ") >= len(pictures) // 2


@pytest.mark.parametrize("name", NAMES)
def test_the_tutorial_opens_as_a_notebook(name):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(os.path.join(ROOT, "tutorials", f"{name}.py"))
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and notebook.cells[0].source.startswith(f"# {int(name[:2])}. ")
    assert kinds.count("markdown") >= 4 and kinds.count("code") >= 4
    assert any("Exercise" in cell.source for cell in notebook.cells if cell.cell_type == "markdown")
