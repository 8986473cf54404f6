"""Which executor runs a compiled graph: "triton" (a GPU, else Triton's interpreter),
"interpret" (Triton's interpreter on the CPU) or "reference" (NumPy, node by node)."""
from __future__ import annotations

import os

from ops.errors import BackendError

BACKENDS = ("triton", "interpret", "reference")


def default_backend():
    return os.environ.get("CHAINRULE_BACKEND", "triton")


def resolve(backend):
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} "
                           "(or set CHAINRULE_BACKEND)")
    return backend


def executor_for(graph, backend, carry=(), autotune=None, replay=None):
    """carry: (input index, output index) pairs the executor keeps between calls. autotune,
    replay: the Triton executor's (None: on for a GPU, off for the interpreter)."""
    backend = resolve(backend)
    if backend == "reference":
        from .reference import ReferenceExecutor

        return ReferenceExecutor(graph, carry)
    from .triton import TritonExecutor, make_target

    return TritonExecutor(graph, make_target(backend), carry=carry, autotune=autotune, replay=replay)
