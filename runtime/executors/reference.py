"""The reference executor: a compiled graph run node by node with each primitive's NumPy code
(ops/evaluate.py). It launches no kernel: its program is the graph itself, and its report
counts the nodes it evaluates."""
from __future__ import annotations

import numpy as np

from ops.errors import BackendError
from ops.evaluate import run_graph


class ReferenceExecutor:
    """Backend "reference"."""

    name = "reference"

    @staticmethod
    def target_for(backend):
        return None              # no kernels: the graph is the program

    def __init__(self, compiled, poison=False, autotune=None, replay=None):
        if autotune or replay:
            raise BackendError("the reference backend runs the graph node by node: it has no kernels to autotune "
                               "and no launches to replay")
        self.compiled = compiled
        self.seconds = {}                        # nothing to load or tune
        self.graph = compiled.graph
        self.carry = list(compiled.carry)       # (input index, output index)
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

    def executed(self):
        """What one call runs: every node of the graph, one NumPy call each."""
        return {"backend": self.name, "runs": "nodes", "count": self.graph.num_ops}

    def artifacts(self):
        return []
