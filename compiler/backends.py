"""Backends by name, and the executor that runs each one.

    "triton"     the generated kernels: on the GPU when there is one, else Triton's interpreter
    "interpret"  the generated kernels under Triton's interpreter on the CPU
    "reference"  the graph itself, node by node in NumPy

Executors live in the layer above (runtime/executors/): the compiler must never import it.
So `compile` finds an executor the way Triton finds its backends and torch.compile its
third-party ones: by name, through the package's entry points (pyproject.toml,
[project.entry-points."chainrule.executors"]). An executor class takes a `Compiled` and says,
through `target_for(backend)`, which target its kernels are compiled for (None: none).
"""
from __future__ import annotations

import functools
import os
from importlib.metadata import entry_points

from ops.errors import BackendError

BACKENDS = ("triton", "interpret", "reference")
GROUP = "chainrule.executors"


def default_backend():
    return os.environ.get("CHAINRULE_BACKEND", "triton")


def resolve(backend):
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} "
                           "(or set CHAINRULE_BACKEND)")
    return backend


@functools.lru_cache(maxsize=None)
def executor_class(backend):
    """The class that runs `backend`'s compiled programs."""
    found = [e for e in entry_points(group=GROUP) if e.name == backend]
    if not found:
        raise BackendError(f"no executor is installed for backend {backend!r}: chainrule's executors are found "
                           f"through the {GROUP!r} entry points; run `pip install -e .` in the repository")
    return found[0].load()
