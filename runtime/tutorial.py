"""What every tutorial shares: where its pictures go, showing a picture or a kernel the same
way in a notebook and in a terminal, and checking the exercises.

A tutorial is a Jupyter notebook kept as a percent-format Python file (tutorials/NN_name.py);
it runs as `python tutorials/NN_name.py` and opens as a notebook (jupytext). Run as a script,
pictures are written to files and their paths printed; in a notebook they are displayed
inline as well. An exercise is checked by code, so the tutorial fails loudly when an answer
(or chainrule) is wrong:

    from runtime.tutorial import Tutorial
    tut = Tutorial("01_gradient_descent")
    tut.show(graph, "forward")                     # a Graph, a Program's step, a figure, DOT text
    tut.check(1, "the derivative at x = 3", got=answer, want=6.0)
    tut.done()                                     # "all 3 exercises correct"

Pictures go to `tutorials/out/NN_name/` (or $CHAINRULE_TUTORIAL_OUT/NN_name/), which git ignores.
Without graphviz, graphs are written as their .dot source (compiler/render.py says once how to
install graphviz) and the tutorial prints that file's path where the picture would be.
"""
from __future__ import annotations

import os

import numpy as np

from compiler.render import render_dot
from ops.errors import ArgumentError
from ops.ir import Graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExerciseError(AssertionError):
    """An exercise's answer is not the expected one."""


def in_notebook():
    try:
        from IPython import get_ipython  # optional: installed with Jupyter, absent in a plain script run
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Tutorial:
    def __init__(self, name):
        self.name = name
        base = os.environ.get("CHAINRULE_TUTORIAL_OUT") or os.path.join(ROOT, "tutorials", "out")
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir, exist_ok=True)
        self.checked = []
        if not in_notebook():
            import matplotlib  # heavy: imported when a tutorial starts, not with runtime

            matplotlib.use("Agg")          # a script draws into files, never a window

    def path(self, filename):
        """Where a file of this tutorial goes."""
        return os.path.join(self.dir, filename)

    # -- showing ---------------------------------------------------------------------------------
    def show(self, thing, name, **options):
        """Draw `thing` into `name`.svg (a figure: `name`.png) and display it in a notebook.
        thing: a Graph (forward or backward picture), a matplotlib Figure, or DOT text.
        Graph options (collapse=, expand=) go to Graph.render. Returns the path written."""
        if isinstance(thing, Graph):
            path = thing.render(self.path(f"{name}.svg"), **options)
        elif hasattr(thing, "savefig"):
            import matplotlib.pyplot as plt  # heavy: only a figure needs it

            path = self.path(f"{name}.png")
            thing.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(thing)
        elif isinstance(thing, str):
            path = render_dot(thing, self.path(f"{name}.svg"))
        else:
            raise TypeError(f"show: cannot draw a {type(thing).__name__}; give a Graph, a matplotlib Figure "
                            "or DOT text")
        self._display(path)
        return path

    def show_file(self, path):
        """Display a picture some other call already wrote (Program.render, memory_plot)."""
        self._display(path)
        return path

    @staticmethod
    def picture(paths, name):
        """The picture called `name` among the paths a Program.render or dump returned:
        name.svg, or name.dot when graphviz is missing (render.render_dot)."""
        wanted = {f"{name}.{fmt}" for fmt in ("svg", "png", "pdf", "dot")}
        found = [p for p in paths if os.path.basename(p) in wanted]
        if not found:
            raise ArgumentError(f"picture: no picture called {name!r} among {[os.path.basename(p) for p in paths]}")
        return found[0]

    def _display(self, path):
        if path.endswith(".dot"):       # no graphviz: render_dot wrote the picture's source instead
            print(f"[picture] {os.path.relpath(path)} (graphviz source: install graphviz to see it drawn)")
            return
        print(f"[picture] {os.path.relpath(path)}")
        if in_notebook():
            from IPython.display import SVG, Image, display  # optional: only in a notebook

            display(SVG(filename=path) if path.endswith(".svg") else Image(filename=path))

    def show_code(self, text, start=None, end=None, title=None):
        """Print source code (a generated kernel), or its lines from the first containing
        `start` to the first after it containing `end`; returns the text shown."""
        lines = text.splitlines()
        if start is not None:
            first = next(i for i, line in enumerate(lines) if start in line)
            last = len(lines) - 1 if end is None else next(i for i in range(first + 1, len(lines)) if end in lines[i])
            lines = lines[first:last + 1]
        shown = "\n".join(lines)
        if title:
            print(f"---- {title} ----")
        print(shown)
        return shown

    # -- exercises -------------------------------------------------------------------------------
    def check(self, number, what, got, want=None, tol=1e-6, hint=""):
        """Exercise `number`: is `got` equal to `want` (numbers and arrays within a relative
        `tol`; anything else with ==)? With want=None, `got` is itself the verdict (a bool).
        Prints a line either way; raises ExerciseError when wrong."""
        if want is None:
            ok = bool(got)
        elif isinstance(want, (bool, str, tuple, list, dict)) and not _numeric_sequence(want):
            ok = got == want
        else:
            got_a, want_a = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
            ok = got_a.shape == want_a.shape and bool(np.all(np.abs(got_a - want_a)
                                                              <= tol * np.maximum(1.0, np.abs(want_a))))
        self.checked.append((number, ok))
        if ok:
            print(f"exercise {number} ({what}): correct")
            return True
        shown = "" if want is None else f": got {_short(got)}, expected {_short(want)}"
        raise ExerciseError(f"exercise {number} ({what}) is not right yet{shown}" + (f". Hint: {hint}" if hint else ""))

    def done(self):
        """The closing line: how many exercises were checked, all correct."""
        numbers = sorted({n for n, _ in self.checked})
        print(f"{self.name}: all {len(numbers)} exercises correct; pictures in {os.path.relpath(self.dir)}")


def _numeric_sequence(value):
    return isinstance(value, (tuple, list)) and all(isinstance(v, (int, float, np.number)) for v in value) \
        and not all(isinstance(v, bool) for v in value)


def _short(value):
    text = np.array2string(np.asarray(value), precision=6, threshold=8) if not isinstance(value, str) else repr(value)
    return text if len(text) < 120 else text[:117] + "..."
