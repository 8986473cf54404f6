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
    T.flatten = lambda a, start_dim=0, end_dim=-1: F.flatten(a, start_dim, end_dim)
    T.transpose = lambda a, dim0, dim1: F.transpose(a, dim0, dim1)
    T.permute = lambda a, *dims: F.permute(a, F._shape_arg(dims))
    T.unsqueeze = lambda a, dim: F.unsqueeze(a, dim)
    T.squeeze = lambda a, dim=None: F.squeeze(a, dim)
    T.expand = lambda a, *sizes: F.broadcast_to(a, F._shape_arg(sizes))
    T.sum = lambda a, dim=None, keepdim=False, dtype=None: F.sum(a, dim, keepdim, dtype=dtype)
    T.mean = lambda a, dim=None, keepdim=False, dtype=None: F.mean(a, dim, keepdim, dtype=dtype)
    T.amax = lambda a, dim=(), keepdim=False: F.amax(a, dim, keepdim)
    T.amin = lambda a, dim=(), keepdim=False: F.amin(a, dim, keepdim)
    T.argmax = lambda a, dim=None, keepdim=False: F.argmax(a, dim, keepdim)
    T.var = lambda a, dim=None, *, correction=1, keepdim=False: F.var(a, dim, correction=correction, keepdim=keepdim)
    T.std = lambda a, dim=None, *, correction=1, keepdim=False: F.std(a, dim, correction=correction, keepdim=keepdim)
    T.matmul = lambda a, b: F.matmul(a, b)
    T.pow = lambda a, b: F.pow(a, b)
    T.clamp = lambda a, min=None, max=None: F.clamp(a, min, max)
    for name in ("exp", "log", "sqrt", "abs", "neg", "relu", "sigmoid", "tanh", "detach"):
        setattr(T, name, getattr(F, name))
    T.softmax = lambda a, dim: F.softmax(a, dim)
    T.log_softmax = lambda a, dim: F.log_softmax(a, dim)
    T.to = lambda a, dtype: F.to(a, dtype)
    T.float = lambda a: F.to(a, "float32")
    T.double = lambda a: F.to(a, "float64")
    T.long = lambda a: F.to(a, "int64")


_attach_tensor_methods()

from . import layers  # noqa: E402  (Keras/PyTorch-style layers: `from ops import layers as L`)

__all__ = ["Spec", "Tensor", "spec", "scope", "functional", "primitives", "PRIMITIVES", "layers"] + \
    list(_functional_names)
__all__ += ["optim"]
