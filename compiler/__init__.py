"""chainrule's compiler: `import compiler as C`.

trace -> autodiff -> simplify -> (fusion, memory planning, Triton codegen) -> runtime.
"""
from ops import errors, ir
from ops.errors import ArgumentError, BackendError, ChainruleError, DTypeError, GradientError, ShapeError
from ops.ir import Graph, Node, Source

from . import render  # noqa: F401  (installs the drawer that Graph.render uses)
from .api import Program, compile, grad, jit, trace, value_and_grad
from .autodiff import grad_graph
from .inspect import gradient_check_view, scalar_view
from .simplify import algebraic, cse, dce, fold_constants, simplify
from .train_step import TrainStep, compile_train_step

__all__ = ["trace", "jit", "grad", "value_and_grad", "compile", "Program", "grad_graph", "simplify", "dce",
           "cse", "fold_constants", "algebraic", "Graph", "Node", "Source", "ir", "errors", "ChainruleError",
           "ShapeError", "DTypeError", "ArgumentError", "GradientError", "BackendError", "scalar_view",
           "gradient_check_view", "compile_train_step", "TrainStep"]
