"""The DSL's functions, named and behaving like `torch` / `torch.nn.functional`.

Same names, argument names, order and defaults, so any call maps 1:1 to torch. Most
are composites written with the primitives of `ops.primitives`: their backward is
derived by the chain rule, never written by hand. Each call runs inside a named scope,
so the graph remembers that, say, these six nodes are one `softmax`.
"""
from __future__ import annotations

import builtins
import functools
import inspect
import math
import numbers

import numpy as np

from ops import ir
from ops.errors import ArgumentError, DTypeError, ShapeError

from . import primitives as P
from .dtypes import FLOATS, INTS, is_float, normalize, promote
from .primitive import constant
from .tensor import Tensor
from .trace import require_labels

_HINTS = {"axis": "dim", "axes": "dim", "keepdims": "keepdim", "ddof": "correction", "unbiased": "correction",
          "kernel": "kernel_size", "strides": "stride", "x": "input", "a": "input", "training_mode": "training"}

__all__ = []


# Ops that are one primitive: inside a composite they do not open a scope of their own, so
# a softmax's nodes say "softmax", not "softmax.div".
_THIN = {"add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs", "maximum", "minimum", "clamp",
         "where", "lt", "le", "gt", "ge", "eq", "ne", "detach", "to", "sum", "amax", "amin", "reshape", "flatten",
         "permute", "transpose", "unsqueeze", "squeeze", "broadcast_to", "getitem", "cat", "sigmoid", "tanh"}


def op(fn):
    """Make `fn` a DSL op: torch-like argument checking, and a scope naming its nodes."""
    signature = inspect.signature(fn)
    name = fn.__name__.rstrip("_")
    thin = name in _THIN

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            message = str(e)
            unknown = [k for k in kwargs if k not in signature.parameters]
            hint = next((f" (did you mean {_HINTS[k]}=?)" for k in unknown if k in _HINTS), "")
            raise ArgumentError(f"{name}() {message}{hint}; its signature is {name}{signature}",
                                source=ir.capture_source()) from None
        if thin and ir.current_scope():
            return fn(*args, **kwargs)
        with ir.scope(name):
            return fn(*args, **kwargs)

    wrapper.signature = signature
    __all__.append(name)
    return wrapper


def _fail(error_type, op_name, message):
    return error_type(message, op=op_name, source=ir.capture_source())


def _tensor(x, dtype=None):
    """A Tensor for a Tensor, a Python scalar or a NumPy array (as a constant)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return constant(x, normalize(x.dtype) if dtype is None else dtype)
    if isinstance(x, numbers.Number):
        return constant(x, dtype or promote([], [_kind(x)]))
    raise ArgumentError(f"expected a tensor or a number, got {type(x).__name__}", source=ir.capture_source())


def _kind(x):
    return "bool" if isinstance(x, bool) else "int" if isinstance(x, numbers.Integral) else "float"


def _float(x):
    """Ops such as exp or mean turn integers into float32, as torch does."""
    x = _tensor(x)
    return x if is_float(x.dtype) else P.cast(x, dtype="float32")


def _dim(d, ndim, op_name):
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise _fail(ShapeError, op_name, f"dim {d} is out of range for a tensor with {ndim} dimensions")
    return d % max(ndim, 1)


def _dims(dim, ndim, op_name):
    """None or () -> every dim; an int or a sequence -> sorted, non-negative, unique."""
    if dim is None or dim == () or dim == []:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    return tuple(sorted({_dim(d, ndim, op_name) for d in dims}))


def _pair(v, name, op_name):
    if isinstance(v, numbers.Integral):
        return (int(v), int(v))
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, numbers.Integral) for i in v):
        return (int(v[0]), int(v[1]))
    raise _fail(ArgumentError, op_name, f"{name} must be an int or a pair of ints, got {v!r}")


# -- arithmetic ------------------------------------------------------------------------------

@op
def add(input, other, *, alpha=1):
    return P.add(input, other if alpha == 1 else mul(other, alpha))


@op
def sub(input, other, *, alpha=1):
    return P.sub(input, other if alpha == 1 else mul(other, alpha))


@op
def mul(input, other):
    return P.mul(input, other)


@op
def div(input, other, *, rounding_mode=None):
    if rounding_mode is not None:
        raise _fail(ArgumentError, "div", f"rounding_mode={rounding_mode!r} is not supported (only true division)")
    if isinstance(input, Tensor) and isinstance(other, Tensor):
        if not is_float(promote([input.dtype, other.dtype])):
            input = _float(input)
    elif isinstance(input, Tensor) and not is_float(input.dtype):
        input = _float(input)
    elif isinstance(other, Tensor) and not is_float(other.dtype):
        other = _float(other)
    return P.div(input, other)


@op
def neg(input):
    return P.neg(input)


@op
def pow(input, exponent):
    if isinstance(input, Tensor) and not is_float(input.dtype):
        input = _float(input)
    if isinstance(exponent, numbers.Number) and not isinstance(input, Tensor):
        raise _fail(ArgumentError, "pow", "needs at least one tensor")
    if not isinstance(input, Tensor):
        base = float(input) if isinstance(input, numbers.Number) else input     # a number or a NumPy array
        input = _tensor(base, dtype=exponent.dtype if is_float(exponent.dtype) else "float32")
    return P.pow(input, exponent)


@op
def exp(input):
    return P.exp(_float(input))


@op
def log(input):
    return P.log(_float(input))


@op
def sqrt(input):
    return P.sqrt(_float(input))


@op
def abs(input):
    return P.abs(input)


@op
def maximum(input, other):
    return P.maximum(input, other)


@op
def minimum(input, other):
    return P.minimum(input, other)


@op
def clamp(input, min=None, max=None):
    # where, not maximum/minimum: as in torch, a value equal to a bound keeps its whole
    # gradient (maximum would split it at the tie), and min > max gives max everywhere
    out = input
    if min is not None:
        out = P.where(P.lt(out, min), min, out)
    if max is not None:
        out = P.where(P.gt(out, max), max, out)
    return out


@op
def where(condition, input, other):
    condition = _tensor(condition)
    if condition.dtype != "bool":
        raise _fail(DTypeError, "where", f"the condition must be a bool tensor (a comparison), got {condition.dtype}")
    return P.where(condition, input, other)


def _comparison(prim):
    def compare(input, other):
        return prim(input, other)
    compare.__name__ = prim.name
    compare.__doc__ = f"Elementwise {prim.formula}; a bool tensor with no gradient."
    return op(compare)


lt, le, gt, ge, eq, ne = (_comparison(p) for p in (P.lt, P.le, P.gt, P.ge, P.eq, P.ne))


@op
def detach(input):
    """The same values; the gradient stops here (torch's `.detach()`, JAX's `stop_gradient`)."""
    return P.detach(input)


@op
def to(input, dtype):
    dtype = normalize(dtype)
    return input if input.dtype == dtype else P.cast(input, dtype=dtype)


# -- activations -------------------------------------------------------------------------------

@op
def relu(input, inplace=False):
    # `x <= 0`, not `x > 0`: NaN compares false, so it comes through as NaN (and its gradient
    # passes, as torch's); where(x > 0, x, 0) would turn it into a silent 0
    return P.where(P.le(input, 0), 0, input)


@op
def leaky_relu(input, negative_slope=0.01, inplace=False):
    return P.where(P.gt(input, 0), input, P.mul(input, negative_slope))


@op
def sigmoid(input):
    return P.sigmoid(_float(input))


@op
def tanh(input):
    return P.tanh(_float(input))


def _softmax_dim(input, dim, op_name):
    if dim is None:     # torch's legacy implicit choice
        dim = 0 if input.ndim in (0, 1, 3) else 1
    return _dim(dim, input.ndim, op_name)


def _shifted(input, dim):
    """x - max(x): the same softmax, and exp can no longer overflow. The max is a constant
    for the gradient (softmax does not change when every input moves by the same amount)."""
    if input.shape[dim] == 0:        # nothing to shift (and no max): the empty result as it is
        return input
    return input - P.detach(P.reduce_max(input, dims=(dim,), keepdim=True))


@op
def softmax(input, dim=None, _stacklevel=3, dtype=None):
    input = _float(input) if dtype is None else to(input, dtype)
    dim = _softmax_dim(input, dim, "softmax")
    e = P.exp(_shifted(input, dim))
    return e / P.reduce_sum(e, dims=(dim,), keepdim=True)


@op
def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    input = _float(input) if dtype is None else to(input, dtype)
    dim = _softmax_dim(input, dim, "log_softmax")
    z = _shifted(input, dim)
    return z - P.log(P.reduce_sum(P.exp(z), dims=(dim,), keepdim=True))


@op
def logsumexp(input, dim, keepdim=False):
    input = _float(input)
    dims = _dims(dim, input.ndim, "logsumexp")
    if any(input.shape[d] == 0 for d in dims):     # log of an empty sum: -inf, as torch (no max to shift by)
        out = P.log(P.reduce_sum(P.exp(input), dims=dims, keepdim=True))
    else:
        m = P.detach(P.reduce_max(input, dims=dims, keepdim=True))
        m = P.where(P.eq(P.abs(m), math.inf), 0.0, m)      # as torch: an infinite max shifts by 0 (inf - inf is NaN)
        out = m + P.log(P.reduce_sum(P.exp(input - m), dims=dims, keepdim=True))
    return out if keepdim else P.reshape(out, shape=tuple(d for i, d in enumerate(input.shape) if i not in dims))


# -- reductions --------------------------------------------------------------------------------

@op
def sum(input, dim=None, keepdim=False, *, dtype=None):
    input = _tensor(input) if dtype is None else to(input, dtype)
    return P.reduce_sum(input, dims=_dims(dim, input.ndim, "sum"), keepdim=keepdim)


@op
def mean(input, dim=None, keepdim=False, *, dtype=None):
    input = _float(input) if dtype is None else to(input, dtype)
    dims = _dims(dim, input.ndim, "mean")
    count = math.prod(input.shape[d] for d in dims)
    return P.reduce_sum(input, dims=dims, keepdim=keepdim) / count


@op
def amax(input, dim=(), keepdim=False):
    return P.reduce_max(input, dims=_dims(dim, input.ndim, "amax"), keepdim=keepdim)


@op
def amin(input, dim=(), keepdim=False):
    return -P.reduce_max(-input, dims=_dims(dim, input.ndim, "amin"), keepdim=keepdim)


@op
def argmax(input, dim=None, keepdim=False):
    if dim is None:
        if input.numel() == 0:
            raise _fail(ShapeError, "argmax", f"Expected reduction dim to be specified for input.numel() == 0: "
                        f"the input {tuple(input.shape)} has no elements")
        flat = P.argmax(P.reshape(input, shape=(input.numel(),)), dim=0, keepdim=False)
        return P.reshape(flat, shape=(1,) * input.ndim) if keepdim else flat
    return P.argmax(input, dim=_dim(dim, input.ndim, "argmax"), keepdim=keepdim)


@op
def var(input, dim=None, *, correction=1, keepdim=False):
    input = _float(input)
    dims = _dims(dim, input.ndim, "var")
    count = math.prod(input.shape[d] for d in dims)
    centered = input - mean(input, dims, keepdim=True)
    return sum(centered * centered, dims, keepdim=keepdim) / max(count - correction, 0)


@op
def std(input, dim=None, *, correction=1, keepdim=False):
    return P.sqrt(var(input, dim, correction=correction, keepdim=keepdim))


# -- shapes --------------------------------------------------------------------------------------

def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


@op
def reshape(input, shape):
    shape = tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise _fail(ShapeError, "reshape", f"only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or input.numel() % known:
            raise _fail(ShapeError, "reshape", f"cannot reshape {input.shape} ({input.numel()} elements) into {shape}")
        shape = tuple(input.numel() // known if d == -1 else d for d in shape)
    return input if shape == input.shape else P.reshape(input, shape=shape)


@op
def flatten(input, start_dim=0, end_dim=-1):
    if input.ndim == 0:
        return P.reshape(input, shape=(1,))
    start, end = _dim(start_dim, input.ndim, "flatten"), _dim(end_dim, input.ndim, "flatten")
    if start > end:
        raise _fail(ShapeError, "flatten", f"start_dim {start_dim} comes after end_dim {end_dim}")
    shape = input.shape[:start] + (math.prod(input.shape[start:end + 1]),) + input.shape[end + 1:]
    return input if shape == input.shape else P.reshape(input, shape=shape)


@op
def permute(input, dims):
    dims = tuple(_dim(d, input.ndim, "permute") for d in dims)
    if sorted(dims) != list(range(input.ndim)):
        raise _fail(ShapeError, "permute", f"dims {dims} are not a permutation of the {input.ndim} dimensions "
                                           f"of a tensor of shape {input.shape}")
    return input if dims == tuple(range(input.ndim)) else P.permute(input, dims=dims)


@op
def transpose(input, dim0, dim1):
    dims = list(range(input.ndim))
    a, b = _dim(dim0, input.ndim, "transpose"), _dim(dim1, input.ndim, "transpose")
    dims[a], dims[b] = dims[b], dims[a]
    return permute(input, dims)


@op
def unsqueeze(input, dim):
    dim = _dim(dim, input.ndim + 1, "unsqueeze")
    return P.reshape(input, shape=input.shape[:dim] + (1,) + input.shape[dim:])


@op
def squeeze(input, dim=None):
    dims = _dims(dim, input.ndim, "squeeze")
    shape = tuple(d for i, d in enumerate(input.shape) if not (i in dims and d == 1))
    return input if shape == input.shape else P.reshape(input, shape=shape)


@op
def broadcast_to(input, size):
    size = tuple(input.shape[i - (len(size) - input.ndim)] if d == -1 else d for i, d in enumerate(size))
    return input if size == input.shape else P.expand(input, shape=size)


@op
def cat(tensors, dim=0):
    tensors = [_tensor(t) for t in tensors]
    if not tensors:
        raise _fail(ArgumentError, "cat", "needs at least one tensor")
    ranks = {t.ndim for t in tensors}
    if len(ranks) > 1:
        raise _fail(ShapeError, "cat", f"tensors of shapes {', '.join(str(t.shape) for t in tensors)} have "
                                       "different numbers of dimensions")
    d = _dim(dim, tensors[0].ndim, "cat")
    return tensors[0] if len(tensors) == 1 else P.cat(*tensors, dim=d)


@op
def stack(tensors, dim=0):
    tensors = [_tensor(t) for t in tensors]
    d = _dim(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


@op
def getitem(input, index):
    """Basic indexing: ints, slices with positive steps, None and `...`."""
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (Tensor, np.ndarray, list)) for i in index):
        raise _fail(ArgumentError, "getitem", "indexing with a tensor or a list is not supported; "
                                              "use O.one_hot and a sum, or O.where")
    if builtins.sum(i is Ellipsis for i in index) > 1:
        raise _fail(ArgumentError, "getitem", "an index can only have a single ellipsis ('...')")
    used = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    if used > input.ndim:
        raise _fail(ShapeError, "getitem", f"too many indices ({used}) for a tensor of shape {input.shape}")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (input.ndim - used) + index[at + 1:]
    else:
        index = index + (slice(None),) * (input.ndim - used)
    starts, stops, steps, shape, axis = [], [], [], [], 0
    for i in index:
        if i is None:
            shape.append(1)
            continue
        size = input.shape[axis]
        if isinstance(i, numbers.Integral):
            if not -size <= i < size:
                raise _fail(ShapeError, "getitem", f"index {i} is out of range for dimension {axis} of size {size}")
            i = int(i) % size
            starts.append(i), stops.append(i + 1), steps.append(1)
        else:
            start, stop, step = i.indices(size)
            if step <= 0:
                raise _fail(ArgumentError, "getitem", f"slice steps must be positive, got {step}")
            n = len(range(start, stop, step))
            starts.append(start), stops.append(start + (n - 1) * step + 1 if n else start), steps.append(step)
            shape.append(n)
        axis += 1
    out = input
    if (tuple(starts), tuple(stops)) != ((0,) * input.ndim, input.shape) or any(s != 1 for s in steps):
        out = P.slice_(out, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    return out if tuple(shape) == out.shape else P.reshape(out, shape=tuple(shape))


# -- linear algebra -----------------------------------------------------------------------------


@op
def matmul(input, other):
    """torch.matmul: 1-D operands are promoted and batch dimensions broadcast."""
    a, b = _tensor(input), _tensor(other)
    if a.ndim == 0 or b.ndim == 0:
        raise _fail(ShapeError, "matmul", f"both operands need at least one dimension, got shapes {a.shape} and {b.shape}")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = P.reshape(a, shape=(1,) + a.shape)
    if squeeze_b:
        b = P.reshape(b, shape=b.shape + (1,))
    if a.shape[-1] != b.shape[-2]:
        raise _fail(ShapeError, "matmul", f"shapes {tuple(input.shape)} and {tuple(other.shape)} do not fit: "
                                          f"the inner dimensions {a.shape[-1]} and {b.shape[-2]} differ")
    try:
        batch = P.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ShapeError as e:
        raise _fail(ShapeError, "matmul", f"batch dimensions: {e.bare_message}") from None
    if a.ndim > 2 and b.ndim == 2 and not squeeze_b:
        # [..., M, K] @ [K, N]: one big 2-D product, as torch does
        out = P.matmul(P.reshape(a, shape=(math.prod(a.shape[:-1]), a.shape[-1])), b)
        out = P.reshape(out, shape=a.shape[:-1] + (b.shape[-1],))
    else:
        if a.shape[:-2] != batch:
            a = P.expand(a, shape=batch + a.shape[-2:])
        if b.shape[:-2] != batch:
            b = P.expand(b, shape=batch + b.shape[-2:])
        out = P.matmul(a, b)
    if squeeze_a or squeeze_b:
        shape = out.shape
        if squeeze_b:
            shape = shape[:-1]
        if squeeze_a:
            shape = shape[:-2] + shape[-1:] if not squeeze_b else shape[:-1]
        out = P.reshape(out, shape=shape)
    return out


@op
def linear(input, weight, bias=None):
    if weight.ndim != 2 or input.shape[-1:] != weight.shape[1:]:
        raise _fail(ShapeError, "linear", f"input {input.shape} has {input.shape[-1] if input.ndim else 0} features "
                                          f"but the weight {weight.shape} expects [out_features, in_features] "
                                          f"with in_features={weight.shape[-1]}")
    out = matmul(input, transpose(weight, 0, 1))
    if bias is not None:
        if bias.shape != weight.shape[:1]:
            raise _fail(ShapeError, "linear", f"bias of shape {bias.shape} does not match out_features={weight.shape[0]}")
        out = out + bias
    return out


@op
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if groups != 1:
        raise _fail(ArgumentError, "conv2d", f"groups={groups} is not supported (only groups=1)")
    if input.ndim != 4 or weight.ndim != 4:
        raise _fail(ShapeError, "conv2d", f"expects input [N, C, H, W] and weight [O, C, KH, KW], got "
                                          f"{input.shape} and {weight.shape}")
    stride, dilation = _pair(stride, "stride", "conv2d"), _pair(dilation, "dilation", "conv2d")
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise _fail(ArgumentError, "conv2d", "padding='same' needs stride=1")
            total = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
            if any(t % 2 for t in total):
                raise _fail(ArgumentError, "conv2d", f"padding='same' with an even kernel {weight.shape[2:]} "
                                                     "would pad unevenly; pad explicitly")
            padding = (total[0] // 2, total[1] // 2)
        else:
            raise _fail(ArgumentError, "conv2d", f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    padding = _pair(padding, "padding", "conv2d")
    out = P.conv2d(input, weight, stride=stride, padding=padding, dilation=dilation)
    if bias is not None:
        if bias.shape != weight.shape[:1]:
            raise _fail(ShapeError, "conv2d", f"bias of shape {bias.shape} does not match the {weight.shape[0]} "
                                              "output channels")
        out = out + P.reshape(bias, shape=(1, bias.shape[0], 1, 1))
    return out


# -- pooling -------------------------------------------------------------------------------------

def _check_pool_input(op_name, input):
    """An [N, C, H, W] input whose C, H and W are not empty (N may be 0), as torch asks of a pool."""
    if input.ndim != 4:
        raise _fail(ShapeError, op_name, f"expects an input [N, C, H, W], got shape {input.shape}")
    if 0 in input.shape[1:]:
        raise _fail(ShapeError, op_name, f"expects non-empty C, H and W (only the batch may be empty), "
                                         f"got shape {input.shape}")


def _window_args(op_name, input, kernel_size, stride, padding, dilation=1, ceil_mode=False):
    _check_pool_input(op_name, input)
    if ceil_mode:
        raise _fail(ArgumentError, op_name, "ceil_mode=True is not supported")
    kernel = _pair(kernel_size, "kernel_size", op_name)
    stride = kernel if stride is None or stride == [] else _pair(stride, "stride", op_name)
    return dict(kernel_size=kernel, stride=stride, padding=_pair(padding, "padding", op_name),
                dilation=_pair(dilation, "dilation", op_name))


@op
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """The max of each window: gather the element at each window's argmax, so the
    gradient flows back to exactly that element."""
    if return_indices:
        raise _fail(ArgumentError, "max_pool2d", "return_indices=True is not supported")
    window = _window_args("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    return P.window_gather(input, P.window_argmax(input, **window), **window)


@op
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    window = _window_args("avg_pool2d", input, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override == 0:      # not "no override": torch refuses it too
        raise _fail(ArgumentError, "avg_pool2d", "divisor_override must not be zero, got divisor_override=0")
    total = P.window_sum(input, **window)
    if divisor_override is not None:
        return total / divisor_override
    if count_include_pad or window["padding"] == (0, 0):
        return total / math.prod(window["kernel_size"])
    ones = np.ones((1, 1) + input.shape[2:], dtype=input.dtype)
    counts = P.window_sum(ones, **window)          # cells of each window inside the image
    return total / constant(counts, input.dtype)


@op
def adaptive_avg_pool2d(input, output_size):
    _check_pool_input("adaptive_avg_pool2d", input)
    n, c, h, w = input.shape
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:    # None keeps that size, as in torch
        output_size = tuple(size if o is None else o for o, size in zip(output_size, (h, w)))
    oh, ow = _pair(output_size, "output_size", "adaptive_avg_pool2d") if output_size is not None else (h, w)
    if oh < 0 or ow < 0:
        raise _fail(ArgumentError, "adaptive_avg_pool2d", f"output_size must be non-negative, got {(oh, ow)}")
    if oh == 0 or ow == 0:      # an empty result, as torch: cut it from a non-empty one
        whole = broadcast_to(mean(input, (2, 3), keepdim=True), (n, c, max(oh, 1), max(ow, 1)))
        return whole[:, :, :oh, :ow]
    if (oh, ow) == (1, 1):
        return mean(input, (2, 3), keepdim=True)
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(input, (h // oh, w // ow))
    # windows of unequal sizes: row i covers [floor(i*h/oh), ceil((i+1)*h/oh))
    rows = []
    for i in range(oh):
        cols = []
        for j in range(ow):
            r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
            c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            cols.append(mean(input[:, :, r0:r1, c0:c1], (2, 3), keepdim=True))
        rows.append(cat(cols, 3))
    return cat(rows, 2)


# -- normalization -------------------------------------------------------------------------------

@op
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05):
    """Training: normalize with the batch's statistics over (N, H, W). Evaluation: with the
    running statistics given. (Updating the running statistics is the layer's job.)"""
    if input.ndim < 2:
        raise _fail(ShapeError, "batch_norm", f"expects an input [N, C, ...], got shape {input.shape}")
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None and tuple(np.shape(t) if not isinstance(t, Tensor) else t.shape) != (channels,):
            raise _fail(ShapeError, "batch_norm", f"{name} has shape {tuple(np.shape(t) if not isinstance(t, Tensor) else t.shape)}"
                                                  f" but the input {input.shape} has {channels} channels")
    per_channel = (1, channels) + (1,) * (input.ndim - 2)
    dims = (0,) + tuple(range(2, input.ndim))
    if training:
        if math.prod(input.shape[d] for d in dims) <= 1:
            raise _fail(ShapeError, "batch_norm", f"expected more than 1 value per channel when training, "
                                                  f"got input of shape {input.shape}")
        mu = mean(input, dims, keepdim=True)
        sigma2 = var(input, dims, correction=0, keepdim=True)
    else:
        if running_mean is None or running_var is None:
            raise _fail(ArgumentError, "batch_norm", "training=False needs running_mean and running_var")
        mu = reshape(_tensor(running_mean, input.dtype), per_channel)
        sigma2 = reshape(_tensor(running_var, input.dtype), per_channel)
    out = (input - mu) / P.sqrt(sigma2 + eps)
    if weight is not None:
        out = out * reshape(_tensor(weight, input.dtype), per_channel)
    if bias is not None:
        out = out + reshape(_tensor(bias, input.dtype), per_channel)
    return out


@op
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    k = len(normalized_shape)
    if input.shape[input.ndim - k:] != normalized_shape:
        raise _fail(ShapeError, "layer_norm", f"normalized_shape {normalized_shape} does not match the last "
                                              f"dimensions of the input {input.shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != normalized_shape:
            raise _fail(ShapeError, "layer_norm", f"{name} has shape {t.shape}, expected {normalized_shape}")
    dims = tuple(range(input.ndim - k, input.ndim))
    mu = mean(input, dims, keepdim=True)
    sigma2 = var(input, dims, correction=0, keepdim=True)
    out = (input - mu) / P.sqrt(sigma2 + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


# -- regularization --------------------------------------------------------------------------------

@op
def dropout(input, p=0.5, training=True, inplace=False, *, seed=None):
    """Zero each element with probability p and scale the rest by 1/(1-p). The mask comes
    from a counter-based generator and `seed`, so the backward regenerates it."""
    if not 0.0 <= p <= 1.0:
        raise _fail(ArgumentError, "dropout", f"p must be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return input
    if seed is None:
        raise _fail(ArgumentError, "dropout", "needs an explicit seed= (an int, or an integer scalar tensor "
                                              "that changes every step) when training")
    if p == 1.0:
        return input * 0.0
    if isinstance(seed, numbers.Integral):       # a constant of the graph; on NumPy arrays, an array
        seed = constant(int(seed), "int64") if isinstance(input, Tensor) else np.asarray(int(seed), np.int64)
    keep = P.ge(P.rand(seed, shape=input.shape), p)
    # a dropped element is input · 0, as torch's input · mask / (1-p): a NaN (or inf) stays NaN, not a silent 0;
    # a where, not a product with a float mask, so that the backward keeps only the bool mask
    return P.where(keep, input * (1.0 / (1.0 - p)), input * 0.0)


# -- losses ---------------------------------------------------------------------------------------

def _reduce(loss, reduction, op_name, total_weight=None):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return sum(loss)
    if reduction == "mean":
        return sum(loss) / total_weight if total_weight is not None else mean(loss)
    raise _fail(ArgumentError, op_name, f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


@op
def one_hot(tensor, num_classes=-1):
    if num_classes is None or num_classes < 0:
        raise _fail(ArgumentError, "one_hot", "needs num_classes: a traced tensor's values are not known "
                                              "when the graph is built")
    if tensor.dtype not in INTS:
        raise _fail(DTypeError, "one_hot", f"expects integer class indices, got {tensor.dtype}")
    require_labels(tensor, num_classes, None, "one_hot")       # a value out of range has no column: refuse it
    shape = tensor.shape + (num_classes,)
    classes = P.iota(shape=shape, dim=len(shape) - 1, dtype=tensor.dtype)
    return P.cast(P.eq(P.reshape(tensor, shape=tensor.shape + (1,)), classes), dtype="int64")


@op
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """-log softmax(input)[target], averaged. input [N, C] or [N, C, d1, ...]; target holds
    class indices [N, d1, ...] (integers in [0, C), or ignore_index: those positions count
    neither in the sum nor in the mean, as in torch) or class probabilities shaped like input.
    A class index out of range is an error when the labels enter the program."""
    input = _float(input)
    class_dim = _class_dim(input, "cross_entropy")
    classes = input.shape[class_dim]
    logp = log_softmax(input, class_dim)
    target = _tensor(target)
    if target.dtype not in FLOATS or target.shape != input.shape:
        return _class_index_loss(logp, target, weight, ignore_index, reduction, label_smoothing, "cross_entropy")
    _check_class_weight(weight, classes, "cross_entropy")
    w_shape = (1,) * class_dim + (classes,) + (1,) * (input.ndim - class_dim - 1)
    if label_smoothing:                              # class probabilities
        target = target * (1 - label_smoothing) + label_smoothing / classes
    if weight is not None:
        logp = logp * reshape(weight, w_shape)
    loss = -sum(logp * target, class_dim)
    return _reduce(loss, reduction, "cross_entropy", None if reduction != "mean" else
                   constant(float(math.prod(loss.shape)), input.dtype))


@op
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """-input[target], averaged: the negative log likelihood of log-probabilities (what
    log_softmax gives). input [N, C] or [N, C, d1, ...]; target holds class indices [N, d1, ...]
    (integers in [0, C), or ignore_index: those positions count neither in the sum nor in the
    mean). A class index out of range is an error when the labels enter the program."""
    input = _float(input)
    _class_dim(input, "nll_loss")
    return _class_index_loss(input, _tensor(target), weight, ignore_index, reduction, 0.0, "nll_loss")


def _class_dim(input, op_name):
    if input.ndim < 1:
        raise _fail(ShapeError, op_name, f"expects input [N, C] or [C], got shape {input.shape}")
    return 1 if input.ndim >= 2 else 0


def _check_class_weight(weight, classes, op_name):
    if weight is not None and tuple(weight.shape) != (classes,):
        raise _fail(ShapeError, op_name, f"weight has shape {weight.shape}, expected ({classes},)")


def _check_class_indices(logp, target, ignore_index, op_name):
    """Integer labels of the right shape, recorded for the host-side range check
    (ops/trace.py: require_labels), or an error that says what is wrong with them."""
    class_dim = _class_dim(logp, op_name)
    expected = logp.shape[:class_dim] + logp.shape[class_dim + 1:]
    probabilities = (f"; float targets are class probabilities, of the input's shape {logp.shape}"
                     if op_name == "cross_entropy" else "")
    if target.dtype in FLOATS and probabilities and target.shape != expected:      # neither kind of target
        raise _fail(ShapeError, op_name, f"target must hold integer class indices of shape {expected} "
                                         f"or float probabilities of shape {logp.shape}; got "
                                         f"{target.dtype} of shape {target.shape}")
    if target.dtype not in INTS:
        raise _fail(DTypeError, op_name, f"target must hold integer class indices (int64), got {target.dtype} "
                                         f"of shape {target.shape}{probabilities}")
    if target.shape != expected:
        raise _fail(ShapeError, op_name, f"input of shape {logp.shape} needs a target of shape "
                                         f"{expected}, got {target.shape}")
    if not isinstance(ignore_index, numbers.Integral) or isinstance(ignore_index, bool):
        raise _fail(ArgumentError, op_name, f"ignore_index must be an int, got {ignore_index!r}")
    require_labels(target, logp.shape[class_dim], int(ignore_index), op_name)


def _class_index_loss(logp, target, weight, ignore_index, reduction, label_smoothing, op_name):
    """-logp[target] per position (weighted, label-smoothed), positions whose target is
    ignore_index masked out of the sum and of the mean's count, as torch does."""
    _check_class_indices(logp, target, ignore_index, op_name)
    class_dim = _class_dim(logp, op_name)
    classes = logp.shape[class_dim]
    _check_class_weight(weight, classes, op_name)
    w_shape = (1,) * class_dim + (classes,) + (1,) * (logp.ndim - class_dim - 1)
    onehot = P.cast(P.eq(unsqueeze(target, class_dim), P.iota(shape=target.shape[:class_dim] + (classes,) + target.shape[class_dim:],
                                                               dim=class_dim, dtype=target.dtype)), dtype=logp.dtype)
    # An ignore_index that is a class needs a mask of the positions that count. Any other matches
    # no class: its one-hot row is all zeros, and with it -logp[target] and the weight.
    in_range = 0 <= ignore_index < classes
    kept = P.cast(P.ne(target, ignore_index), dtype=logp.dtype) if in_range else None
    w = sum(onehot * reshape(weight, w_shape), class_dim) if weight is not None else None
    nll = -sum(logp * onehot, class_dim)
    loss = nll * w if w is not None else nll
    if label_smoothing:                              # the smoothing term is not zero at an ignored position
        smooth = -(sum(logp * reshape(weight, w_shape), class_dim) if weight is not None else sum(logp, class_dim))
        loss = (1 - label_smoothing) * loss + label_smoothing / classes * smooth
        kept = kept if kept is not None else sum(onehot, class_dim)
    if kept is not None:
        loss = loss * kept
    if reduction != "mean":
        return _reduce(loss, reduction, op_name)
    # the mean's count: the positions kept (weighted), so an ignored one counts in neither sum
    count = w if w is not None else kept if kept is not None else sum(onehot, class_dim)   # per row: fuses with nll
    return sum(loss) / sum(count * kept if in_range and w is not None else count)


@op
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    target = _tensor(target, input.dtype)
    try:
        P.broadcast_shapes(input.shape, target.shape)
    except ShapeError as e:
        raise _fail(ShapeError, "mse_loss", f"input and target: {e.bare_message}") from None
    diff = input - target
    loss = diff * diff
    if weight is not None:
        weight = _tensor(weight, input.dtype)
        loss = loss * weight
        # torch: a weighted mean divides by the sum of the weights, not by the count
        return _reduce(loss, reduction, "mse_loss", sum(broadcast_to(weight, loss.shape)))
    return _reduce(loss, reduction, "mse_loss")


@op
def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """-(y log x + (1 - y) log(1 - x)); each log is clamped at -100, as torch does."""
    target = _tensor(target, input.dtype)
    if target.shape != input.shape:
        raise _fail(ShapeError, "binary_cross_entropy", f"target of shape {target.shape} must match the input's "
                                                        f"shape {input.shape}")
    loss = -(target * _clamped_log(input) + (1 - target) * _clamped_log(1 - input))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def _clamped_log(x):
    """max(log x, -100), whose gradient is finite also at x = 0: the log reads 1 where x is 0,
    so its backward never computes 0 · (1/0); the clamped branch is a constant (gradient 0)."""
    positive = P.gt(x, 0.0)
    return P.where(positive, P.maximum(P.log(P.where(positive, x, 1.0)), -100.0), -100.0)


@op
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None, reduction="mean",
                                     pos_weight=None):
    """binary_cross_entropy(sigmoid(input), target) from the logits, stable for any logit:
    (1 - y)·z + (1 + (w₊ - 1)·y)·(log(1 + e^-|z|) + relu(-z)), torch's form; its derived
    gradient is σ(z) - y (times the weights), never 0/0 or inf."""
    target = _tensor(target, input.dtype)
    if target.shape != input.shape:
        raise _fail(ShapeError, "binary_cross_entropy_with_logits", f"target of shape {target.shape} must match "
                                                                    f"the input's shape {input.shape}")
    # log(1 + e^-z), stably: each side of 0 exponentiates only a value ≤ 0. Written per side
    # (not as log(1 + e^-|z|) + relu(-z)) so that the derivative at z = 0 is -σ(0) = -1/2, as
    # torch's: the kinks of |z| and relu would both contribute 0 there.
    negative = P.lt(input, 0.0)
    below, above = P.where(negative, input, 0.0), _where_not(negative, input)
    softplus_neg = P.where(negative, P.log(1.0 + P.exp(below)) - below, P.log(1.0 + P.exp(-above)))
    log_weight = 1.0 if pos_weight is None else 1.0 + (_tensor(pos_weight, input.dtype) - 1.0) * target
    loss = (1.0 - target) * input + log_weight * softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")



# -- more activations (torch.nn.functional's), composites of the primitives ----------------------
# Each untaken branch of a `where` is fed a harmless value (`_where_not`), so that its gradient,
# multiplied by the zero the where sends it, is 0 and never 0 · inf = NaN.

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _where_not(condition, input, fill=0.0):
    """input where the condition is false, else `fill`: the operand of the other branch."""
    return P.where(condition, fill, input)


@op
def erf(input):
    """The error function 2/√π ∫₀ˣ e^(-t²) dt (torch.erf): one primitive, under gelu."""
    return P.erf(_float(input))


@op
def gelu(input, approximate="none"):
    """x · Φ(x), Φ the normal distribution's CDF: 0.5 x (1 + erf(x / √2)); approximate="tanh"
    gives 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), as torch."""
    if approximate not in ("none", "tanh"):
        raise _fail(ArgumentError, "gelu", f"approximate must be 'none' or 'tanh', got {approximate!r}")
    x = _float(input)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + P.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))))
    return 0.5 * x * (1.0 + P.erf(x * math.sqrt(0.5)))


@op
def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + e^(βx)) / β, and x itself where βx > threshold (as torch: linear there)."""
    if beta == 0:
        raise _fail(ArgumentError, "softplus", "beta must not be 0 (softplus divides by it)")
    x = _float(input)
    bx = x * beta
    linear = P.gt(bx, threshold)
    return P.where(linear, x, P.log(1.0 + P.exp(_where_not(linear, bx))) / beta)


def _exp_below_zero(x, positive, alpha, input_scale=1.0):
    """alpha · (e^(x·input_scale) - 1) where x ≤ 0: the negative branch of elu, selu and celu."""
    return alpha * (P.exp(_where_not(positive, x) * input_scale) - 1.0)


@op
def elu(input, alpha=1.0, inplace=False):
    """x for x > 0, alpha · (e^x - 1) otherwise."""
    x = _float(input)
    positive = P.gt(x, 0.0)
    return P.where(positive, x, _exp_below_zero(x, positive, alpha))


@op
def selu(input, inplace=False):
    """scale · elu(x, alpha) with the self-normalizing constants of Klambauer et al. (torch's)."""
    x = _float(input)
    positive = P.gt(x, 0.0)
    return _SELU_SCALE * P.where(positive, x, _exp_below_zero(x, positive, _SELU_ALPHA))


@op
def celu(input, alpha=1.0, inplace=False):
    """x for x > 0, alpha · (e^(x/alpha) - 1) otherwise."""
    if alpha == 0:
        raise _fail(ArgumentError, "celu", "alpha must not be 0 (celu divides by it)")
    x = _float(input)
    positive = P.gt(x, 0.0)
    return P.where(positive, x, _exp_below_zero(x, positive, alpha, 1.0 / alpha))


@op
def silu(input, inplace=False):
    """x · sigmoid(x) (also called swish)."""
    x = _float(input)
    return x * P.sigmoid(x)


@op
def mish(input, inplace=False):
    """x · tanh(softplus(x))."""
    x = _float(input)
    return x * P.tanh(softplus(x))


@op
def logsigmoid(input):
    """log(sigmoid(x)), stable for any x: -log(1 + e^-x) for x ≥ 0, x - log(1 + e^x) below."""
    x = _float(input)
    nonnegative = P.ge(x, 0.0)
    above, below = P.where(nonnegative, x, 0.0), _where_not(nonnegative, x)
    return P.where(nonnegative, -P.log(1.0 + P.exp(-above)), below - P.log(1.0 + P.exp(below)))


def _hard_clamp(x, min_val, max_val):
    """x clamped to [min_val, max_val], with torch's hardtanh gradient: 0 at the bounds too."""
    return P.where(P.le(x, min_val), min_val, P.where(P.ge(x, max_val), max_val, x))


@op
def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """x clamped to [min_val, max_val]; as torch, its gradient is 0 at the bounds too."""
    if max_val < min_val:
        raise _fail(ArgumentError, "hardtanh", f"max_val {max_val} must not be less than min_val {min_val}")
    return _hard_clamp(_float(input), min_val, max_val)


@op
def relu6(input, inplace=False):
    """min(max(x, 0), 6)."""
    return _hard_clamp(_float(input), 0.0, 6.0)


@op
def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6: 0 below -3, 1 above 3, x/6 + 1/2 between."""
    x = _float(input)
    return _hard_clamp(x / 6.0 + 0.5, 0.0, 1.0)


@op
def hardswish(input, inplace=False):
    """x · relu6(x + 3) / 6: 0 up to -3, x from 3 on (torch's gradient at ±3: 0 and 1). At -inf
    it is 0, the limit; torch computes -inf · 0 there, NaN."""
    x = _float(input)
    return P.where(P.le(x, -3.0), 0.0, P.where(P.ge(x, 3.0), x, x * (x + 3.0) / 6.0))
