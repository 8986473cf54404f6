"""The reference executor: run a graph node by node with each primitive's NumPy code.

It is slow and exact (in float64 it is the yardstick every compiled kernel is checked
against). Each result is checked against the shape and dtype the tracer promised, and an
intermediate is freed after its last use, as a real runtime would.
"""
from __future__ import annotations

import numpy as np

from ops.evaluate import run_graph, run_graph_values  # noqa: F401  (the executor's engine)


class ReferenceExecutor:
    """Backend "reference": a compiled graph is just the graph."""

    name = "reference"

    def __init__(self, graph, carry=()):
        self.graph = graph
        self.carry = list(carry)           # (input index, output index): see runtime/executors/triton.py
        self.carried = None

    def load_state(self, arrays):
        self.carried = [np.array(a, dtype=self.graph.inputs[i].dtype) for (i, _), a in zip(self.carry, arrays)]

    def state(self):
        return [a.copy() for a in self.carried]

    def __call__(self, args):
        if not self.carry:
            return run_graph(self.graph, args)
        if self.carried is None:
            raise RuntimeError("this program carries state: call load_state(arrays) before running it")
        inputs, free = [None] * len(self.graph.inputs), iter(args)
        for (i, _), array in zip(self.carry, self.carried):
            inputs[i] = array
        inputs = [next(free) if a is None else a for a in inputs]
        outputs = run_graph(self.graph, inputs)
        self.carried = [outputs[j] for _, j in self.carry]
        carried_out = {j for _, j in self.carry}
        return [o for j, o in enumerate(outputs) if j not in carried_out]

    def source(self):
        return str(self.graph)

    def kernel_report(self):
        return []          # no kernels: one NumPy call per node

    def files(self):
        return []
