"""How long the pictures take: `Program.render` of each zoo model's training step and of the
ResNet-18-sized step of benchmarks/compile_time.py (graphviz's `dot` does the layout; large
graphs are drawn with each composite call collapsed into one box).

    python benchmarks/render_time.py [--out benchmarks/results/render_time.json]

Goal: the ResNet-sized step renders (forward, backward, kernels, memory) in under 10 s.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import compiler as C  # noqa: E402
from compile_time import resnet18, resnet18_specs  # noqa: E402
from compiler.render import INSTALL_GRAPHVIZ, find_dot  # noqa: E402
from runtime.training import zoo  # noqa: E402
from runtime.bench.report import write_json  # noqa: E402

GOAL_SECONDS = 10.0
DEFAULT_OUT = os.path.join(HERE, "results", "render_time.json")


def step(name):
    if name == "resnet18":
        specs = resnet18_specs()
        return C.compile(resnet18, *specs, grad_argnums=tuple(range(2, len(specs))), backend="reference")
    model = zoo.ZOO[name]
    params = model.init(np.random.default_rng(0))
    return C.compile(model.loss, *model.specs(params, 64), grad_argnums=tuple(range(len(params))),
                     backend="reference")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if find_dot() is None:        # without it render only writes .dot text: the times would mean nothing
        sys.exit(f"render_time: this benchmark times graphviz's `dot`, which is not installed. {INSTALL_GRAPHVIZ}.")
    rows = {}
    print(f"{'model':9s} {'ops':>6s} {'kernels':>7s} {'render s':>9s}  under {GOAL_SECONDS:g} s")
    for name in [*zoo.ZOO, "resnet18"]:
        program = step(name)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            program.render(folder)
            seconds = time.perf_counter() - start
        rows[name] = {"ops": program.graph.num_ops, "kernels": len(program.schedule.kernels), "seconds": seconds}
        print(f"{name:9s} {rows[name]['ops']:6d} {rows[name]['kernels']:7d} {seconds:9.2f}  "
              f"{'yes' if seconds < GOAL_SECONDS else 'NO'}")
    write_json(args.out, {"benchmark": "render_time", "goal_seconds": GOAL_SECONDS, "models": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
