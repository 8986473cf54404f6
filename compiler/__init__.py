"""chainrule's compiler: `import compiler as C`.

trace -> autodiff -> simplify -> (fusion, memory planning, Triton codegen) -> runtime.
"""
import ops  # noqa: F401  (the DSL first: its tensors are what we trace)

from . import ir
from .api import Program, compile, grad, jit, trace, value_and_grad
from .autodiff import grad_graph
from .errors import (ArgumentError, BackendError, ChainruleError, DTypeError, GradientError,
                     ShapeError)
from .inspect import gradient_check_view, scalar_view
from .ir import Graph, Node, Source
from .simplify import algebraic, cse, dce, fold_constants, simplify
from .train import TrainStep, compile_train_step

__all__ = ["trace", "jit", "grad", "value_and_grad", "compile", "Program", "grad_graph", "simplify", "dce",
           "cse", "fold_constants", "algebraic", "Graph", "Node", "Source", "ir", "ChainruleError", "ShapeError",
           "DTypeError", "ArgumentError", "GradientError", "BackendError", "scalar_view", "gradient_check_view",
           "compile_train_step", "TrainStep"]
