"""chainrule's runtime: executors (reference NumPy now; Triton next), backends, the CLI."""
import compiler  # noqa: F401

from .executors.backends import BACKENDS, default_backend
from .executors.reference import run_graph

__all__ = ["BACKENDS", "default_backend", "run_graph"]
