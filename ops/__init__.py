"""chainrule's DSL: `import ops as O`, then write a model with torch-named functions.

    def f(w, x):
        return O.mean(O.relu(x @ w))
"""
from . import errors, functional, ir, primitives
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_names
from .primitive import REGISTRY as PRIMITIVES
from .tensor import Spec, Tensor, spec
from .ir import scope  # noqa: E402  `with O.scope("block1"):` names the nodes made inside (a layer)
from . import optim  # noqa: E402  O.optim.SGD / RMSprop / Adam: updates written in ops

F = functional


def _attach_tensor_methods():
    """Operators and methods of Tensor are the functional ops themselves."""
    T = Tensor
    T.__add__ = lambda a, b: F.add(a, b)
    T.__radd__ = lambda a, b: F.add(b, a)
    T.__sub__ = lambda a, b: F.sub(a, b)
    T.__rsub__ = lambda a, b: F.sub(b, a)
    T.__mul__ = lambda a, b: F.mul(a, b)
    T.__rmul__ = lambda a, b: F.mul(b, a)
    T.__truediv__ = lambda a, b: F.div(a, b)
    T.__rtruediv__ = lambda a, b: F.div(b, a)
    T.__pow__ = lambda a, b: F.pow(a, b)
    T.__rpow__ = lambda a, b: F.pow(b, a)
    T.__matmul__ = lambda a, b: F.matmul(a, b)
    T.__rmatmul__ = lambda a, b: F.matmul(b, a)
    T.__neg__ = lambda a: F.neg(a)
    T.__abs__ = lambda a: F.abs(a)
    T.__lt__ = lambda a, b: F.lt(a, b)
    T.__le__ = lambda a, b: F.le(a, b)
    T.__gt__ = lambda a, b: F.gt(a, b)
    T.__ge__ = lambda a, b: F.ge(a, b)
    T.__eq__ = lambda a, b: F.eq(a, b)
    T.__ne__ = lambda a, b: F.ne(a, b)
    T.__getitem__ = lambda a, index: F.getitem(a, index)
    T.T = property(lambda a: F.permute(a, tuple(reversed(range(a.ndim)))))
    T.mT = property(lambda a: F.transpose(a, -2, -1))
    T.reshape = lambda a, *shape: F.reshape(a, F._shape_arg(shape))
    T.view = T.reshape
    T.permute = lambda a, *dims: F.permute(a, F._shape_arg(dims))
    T.expand = lambda a, *sizes: F.broadcast_to(a, F._shape_arg(sizes))
    # methods that are the functional op itself: x.sum(axis=0) gets the op's own argument check
    for name in ("flatten", "transpose", "unsqueeze", "squeeze", "sum", "mean", "amax", "amin", "argmax", "var",
                 "std", "matmul", "pow", "clamp", "softmax", "log_softmax", "exp", "log", "sqrt", "abs", "neg",
                 "relu", "sigmoid", "tanh", "detach", "to"):
        setattr(T, name, getattr(F, name))
    T.float = lambda a: F.to(a, "float32")
    T.double = lambda a: F.to(a, "float64")
    T.long = lambda a: F.to(a, "int64")


_attach_tensor_methods()

from . import layers  # noqa: E402  (Keras/PyTorch-style layers: `from ops import layers as L`)

__all__ = ["Spec", "Tensor", "spec", "scope", "functional", "primitives", "PRIMITIVES", "layers"] + \
    list(_functional_names)
__all__ += ["optim"]


def __getattr__(name):
    """`O.softmaxx` names the closest ops instead of a bare AttributeError."""
    if name.startswith("__"):
        raise AttributeError(f"module 'ops' has no attribute {name!r}")
    for module in (layers, optim):          # O.Dense: it is O.layers.Dense
        if name in module.__all__:
            raise errors.unknown_name("ops", name, module.__all__, "docs/ops.md",
                                      close=[f"{module.__name__.replace('ops', 'O', 1)}.{name}"])
    raise errors.unknown_name("ops", name, __all__, "docs/ops.md")
