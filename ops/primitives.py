"""The primitives: every op the compiler knows directly, each in one place.

Each entry reads like micrograd: the NumPy reference, the shape rule and the
vector-Jacobian product side by side. A vjp receives the output's cotangent `g`, the
output `out` and the inputs, and returns one cotangent per input, written with ops, so
the backward graph is made of these same primitives (and can be differentiated again).
Broadcasting needs no care here: autodiff sums a cotangent down to its input's shape.

Everything else (softmax, cross_entropy, batch_norm, linear, ...) is a composite in
`ops.functional`, whose gradient the chain rule derives from this table.

`from ops.primitives import *` is the first line of every printed graph.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ops.errors import ArgumentError, DTypeError, ShapeError

from .dtypes import is_float, promote
from .primitive import CONV, LAYOUT, MATMUL, POINTWISE, REDUCTION, REGISTRY, SOURCE, WINDOW, DTypeMaker, Primitive, const  # noqa: F401  (const: for printed programs)
from .random import philox_uniform

f32, f64, i32, i64, b8 = (DTypeMaker(d) for d in ("float32", "float64", "int32", "int64", "bool"))
inf, nan = float("inf"), float("nan")


def _fmt(shape):
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


# -- shape rules -------------------------------------------------------------------------------

def broadcast_shapes(*shapes):
    """NumPy's rule: align on the right; each dimension equal or 1."""
    ndim = max(len(s) for s in shapes)
    out = []
    for axis in range(-ndim, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            raise ShapeError(f"shapes {' and '.join(_fmt(s) for s in shapes)} cannot be broadcast together: "
                             f"dimension {axis} has sizes {' and '.join(str(s[axis]) if len(s) >= -axis else '-' for s in shapes)}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _pointwise(*xs):
    return broadcast_shapes(*(x.shape for x in xs)), promote([x.dtype for x in xs])


def _float_pointwise(*xs):
    shape, dtype = _pointwise(*xs)
    if not is_float(dtype):
        raise DTypeError(f"needs floating-point inputs, got {', '.join(x.dtype for x in xs)}")
    return shape, dtype


def _compare(x, y):
    return broadcast_shapes(x.shape, y.shape), "bool"


def _unary(name, impl, vjp, formula, float_only=True, differentiable=True):
    return Primitive(name, POINTWISE, impl, _float_pointwise if float_only else _pointwise, vjp,
                     formula, differentiable)


def _binary(name, impl, vjp, formula):
    return Primitive(name, POINTWISE, impl, _pointwise, vjp, formula)


# -- pointwise ---------------------------------------------------------------------------------

def _sigmoid(x):
    e = np.exp(-np.abs(x))                      # never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


neg = _unary("neg", np.negative, lambda g, out, x: (-g,), "-x", float_only=False)
exp = _unary("exp", np.exp, lambda g, out, x: (g * out,), "e**x")
log = _unary("log", np.log, lambda g, out, x: (g / x,), "ln x")
sqrt = _unary("sqrt", np.sqrt, lambda g, out, x: (g * 0.5 / out,), "√x")
abs = _unary("abs", np.abs, lambda g, out, x: (g * sign(x),), "|x|", float_only=False)


def _sign(x):
    """NumPy's sign, except that NaN has sign 0, as in torch ((x > 0) - (x < 0))."""
    return np.where(np.isnan(x), 0, np.sign(x)).astype(x.dtype) if x.dtype.kind == "f" else np.sign(x)


sign = _unary("sign", _sign, None, "-1, 0 or 1 (0 for NaN)", float_only=False)
tanh = _unary("tanh", np.tanh, lambda g, out, x: (g * (1 - out * out),), "tanh x")
sigmoid = _unary("sigmoid", _sigmoid, lambda g, out, x: (g * out * (1 - out),), "1 / (1 + e**-x)")


def _erf(x):
    """NumPy has no erf; math.erf per element is exact to the last bit, as torch.erf."""
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


# d/dx erf x = 2/√π · e^(-x²)
erf = _unary("erf", _erf, lambda g, out, x: (g * (2 / math.sqrt(math.pi)) * exp(-(x * x)),), "erf x")

add = _binary("add", np.add, lambda g, out, x, y: (g, g), "x + y")
sub = _binary("sub", np.subtract, lambda g, out, x, y: (g, -g), "x - y")
mul = _binary("mul", np.multiply, lambda g, out, x, y: (g * y, g * x), "x * y")
div = Primitive("div", POINTWISE, np.divide, _float_pointwise,
                lambda g, out, x, y: (g / y, -g * out / y), "x / y")
pow = Primitive("pow", POINTWISE, np.power, _float_pointwise,
                lambda g, out, x, y: (g * y * pow(x, y - 1), g * out * log(x)), "x ** y")


def _split_ties(g, x, y):
    """(x's share, y's share) of g when x wins where x > y: the loser gets nothing and a tie
    splits it, as torch does; where either is NaN nobody loses and both get all of g (torch's
    rule too: the NaN went to the output through both). minimum is maximum with the
    comparison turned round: _split_ties(g, y, x)."""
    unless_lost = where(eq(x, y), 0.5, 1.0)
    return g * where(lt(x, y), 0.0, unless_lost), g * where(gt(x, y), 0.0, unless_lost)


maximum = _binary("maximum", np.maximum, lambda g, out, x, y: _split_ties(g, x, y), "max(x, y)")
minimum = _binary("minimum", np.minimum, lambda g, out, x, y: _split_ties(g, y, x), "min(x, y)")

lt = Primitive("lt", POINTWISE, np.less, _compare, formula="x < y")
le = Primitive("le", POINTWISE, np.less_equal, _compare, formula="x <= y")
gt = Primitive("gt", POINTWISE, np.greater, _compare, formula="x > y")
ge = Primitive("ge", POINTWISE, np.greater_equal, _compare, formula="x >= y")
eq = Primitive("eq", POINTWISE, np.equal, _compare, formula="x == y")
ne = Primitive("ne", POINTWISE, np.not_equal, _compare, formula="x != y")


def _where_shape(cond, x, y):
    if cond.dtype != "bool":
        raise DTypeError(f"the condition must be bool, got {cond.dtype}")
    return broadcast_shapes(cond.shape, x.shape, y.shape), promote([x.dtype, y.dtype])


where = Primitive("where", POINTWISE, np.where, _where_shape,
                  lambda g, out, c, x, y: (None, where(c, g, 0.0), where(c, 0.0, g)), "x if cond else y")

cast = Primitive("cast", POINTWISE, lambda x, dtype: x.astype(dtype), lambda x, dtype: (x.shape, dtype),
                 lambda g, out, x, dtype: (cast(g, dtype=x.dtype) if is_float(x.dtype) else None,),
                 "x converted to dtype")
detach = Primitive("detach", POINTWISE, lambda x: x, lambda x: (x.shape, x.dtype),
                   lambda g, out, x: (None,), "x, but no gradient flows through")


# -- reductions --------------------------------------------------------------------------------

def _check_dims(x, dims):
    for d in dims:
        if not 0 <= d < len(x.shape):
            raise ShapeError(f"dimension {d} is out of range for a tensor of shape {_fmt(x.shape)}")


def _reduced(x, dims, keepdim):
    _check_dims(x, dims)
    if keepdim:
        return tuple(1 if i in dims else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in dims)


def _max_shape(x, dims, keepdim):
    """A max over no elements has no value (a sum's is 0): like torch, refuse it here, at
    trace time, rather than let a kernel return whatever its start value or memory held."""
    shape = _reduced(x, dims, keepdim)
    for d in dims:
        if x.shape[d] == 0:
            raise ShapeError(f"Expected reduction dim {d} to have non-zero size, but the input {_fmt(x.shape)} "
                             f"has no elements along it")
    return shape


def _expand_back(g, x, dims, keepdim):
    """Undo a reduction's shape: put the reduced dims back as 1 and broadcast."""
    kept = tuple(1 if i in dims else d for i, d in enumerate(x.shape))
    return expand(reshape(g, shape=kept), shape=x.shape)


def _sum_shape(x, dims, keepdim):
    return _reduced(x, dims, keepdim), x.dtype if is_float(x.dtype) else "int64"


def _max_vjp(g, out, x, dims, keepdim):
    """The gradient of a max goes to the argmax; ties share it equally (as torch's amax)."""
    winners = cast(eq(x, _expand_back(out, x, dims, keepdim)), dtype=x.dtype)
    count = reduce_sum(winners, dims=dims, keepdim=True)
    return (_expand_back(g, x, dims, keepdim) * winners / count,)


reduce_sum = Primitive("reduce_sum", REDUCTION,
                       lambda x, dims, keepdim: np.sum(x, axis=dims, keepdims=keepdim),
                       _sum_shape,
                       lambda g, out, x, dims, keepdim: (_expand_back(g, x, dims, keepdim),),
                       "Σ x over dims")
reduce_max = Primitive("reduce_max", REDUCTION,
                       lambda x, dims, keepdim: np.max(x, axis=dims, keepdims=keepdim),     # NaN if any is
                       lambda x, dims, keepdim: (_max_shape(x, dims, keepdim), x.dtype),
                       _max_vjp, "max of x over dims")
argmax = Primitive("argmax", REDUCTION,
                   lambda x, dim, keepdim: np.argmax(x, axis=dim, keepdims=keepdim).astype(np.int64),
                   lambda x, dim, keepdim: (_max_shape(x, (dim,), keepdim), "int64"),
                   formula="index of the first max along dim (of the first NaN, if any)")


# -- layout ------------------------------------------------------------------------------------

def _reshape_shape(x, shape):
    if np.prod(shape, dtype=np.int64) != np.prod(x.shape, dtype=np.int64):
        raise ShapeError(f"cannot reshape {_fmt(x.shape)} ({int(np.prod(x.shape))} elements) "
                         f"into {_fmt(shape)} ({int(np.prod(shape))} elements)")
    return tuple(shape), x.dtype


def _expand_shape(x, shape):
    if broadcast_shapes(x.shape, shape) != tuple(shape):
        raise ShapeError(f"cannot expand {_fmt(x.shape)} to {_fmt(shape)}")
    return tuple(shape), x.dtype


def _sum_to(g, shape):
    """The cotangent of a broadcast: sum over every dimension the broadcast created."""
    lead = len(g.shape) - len(shape)
    dims = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    if dims:
        g = reduce_sum(g, dims=dims, keepdim=False)
    return g if g.shape == tuple(shape) else reshape(g, shape=tuple(shape))


def _permute_shape(x, dims):
    if sorted(dims) != list(range(len(x.shape))):
        raise ShapeError(f"dims {dims} are not a permutation of the {len(x.shape)} dimensions of {_fmt(x.shape)}")
    return tuple(x.shape[d] for d in dims), x.dtype


def _slice_shape(x, starts, stops, steps):
    return tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, steps)), x.dtype


def _slice_impl(x, starts, stops, steps):
    return x[tuple(slice(a, b, c) for a, b, c in zip(starts, stops, steps))]


def _slice_vjp(g, out, x, starts, stops, steps):
    """g put back where the slice came from, zeros elsewhere: a pad."""
    lo = starts
    hi = tuple(n - (a + (len(range(a, b, c)) - 1) * c + 1) for n, a, b, c in zip(x.shape, starts, stops, steps))
    return (pad(g, lo=lo, hi=hi, interior=tuple(c - 1 for c in steps)),)


def _pad_shape(x, lo, hi, interior):
    return tuple(l + h + n + max(n - 1, 0) * i for n, l, h, i in zip(x.shape, lo, hi, interior)), x.dtype


def _pad_impl(x, lo, hi, interior):
    shape, _ = _pad_shape(x, lo, hi, interior)
    out = np.zeros(shape, dtype=x.dtype)
    out[tuple(slice(l, l + (n - 1) * (i + 1) + 1, i + 1) for n, l, i in zip(x.shape, lo, interior))] = x
    return out


def _pad_vjp(g, out, x, lo, hi, interior):
    """The part of g where x was placed: a slice."""
    stops = tuple(l + (n - 1) * (i + 1) + 1 for n, l, i in zip(x.shape, lo, interior))
    return (slice_(g, starts=lo, stops=stops, steps=tuple(i + 1 for i in interior)),)


def _cat_shape(*xs, dim):
    first = xs[0].shape
    for x in xs[1:]:
        if len(x.shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(first, x.shape)) if i != dim):
            raise ShapeError(f"tensors of shapes {', '.join(_fmt(x.shape) for x in xs)} differ outside "
                             f"dimension {dim}, so they cannot be concatenated along it")
    shape = list(first)
    shape[dim] = sum(x.shape[dim] for x in xs)
    return tuple(shape), promote([x.dtype for x in xs])


def _cat_vjp(g, out, *xs, dim):
    """Each input gets its own slice of g."""
    pieces, start = [], 0
    for x in xs:
        starts = tuple(start if i == dim else 0 for i in range(len(x.shape)))
        stops = tuple(start + x.shape[dim] if i == dim else n for i, n in enumerate(g.shape))
        pieces.append(slice_(g, starts=starts, stops=stops, steps=(1,) * len(x.shape)))
        start += x.shape[dim]
    return tuple(pieces)


reshape = Primitive("reshape", LAYOUT, lambda x, shape: np.reshape(x, shape), _reshape_shape,
                    lambda g, out, x, shape: (reshape(g, shape=x.shape),), "the same elements in a new shape")
expand = Primitive("expand", LAYOUT, lambda x, shape: np.broadcast_to(x, shape), _expand_shape,
                   lambda g, out, x, shape: (_sum_to(g, x.shape),), "broadcast x to shape")
permute = Primitive("permute", LAYOUT, lambda x, dims: np.transpose(x, dims), _permute_shape,
                    lambda g, out, x, dims: (permute(g, dims=tuple(np.argsort(dims).tolist())),),
                    "x with its dimensions reordered")
slice_ = Primitive("slice", LAYOUT, _slice_impl, _slice_shape, _slice_vjp, "x[start:stop:step, ...]")
pad = Primitive("pad", LAYOUT, _pad_impl, _pad_shape, _pad_vjp,
                "x spread out with zeros: lo before, hi after, interior between elements")
cat = Primitive("cat", LAYOUT, lambda *xs, dim: np.concatenate(xs, axis=dim), _cat_shape, _cat_vjp,
                "tensors joined along dim")


# -- matmul ------------------------------------------------------------------------------------

def _matmul_shape(a, b):
    if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[:-2] != b.shape[:-2]:
        raise ShapeError(f"the primitive takes [..., M, K] @ [..., K, N] with equal batch dimensions, "
                         f"got {_fmt(a.shape)} and {_fmt(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"shapes {_fmt(a.shape)} and {_fmt(b.shape)} do not fit: the inner dimensions "
                         f"{a.shape[-1]} and {b.shape[-2]} differ")
    return a.shape[:-1] + (b.shape[-1],), promote([a.dtype, b.dtype])


def _swap_last(x):
    dims = tuple(range(len(x.shape)))
    return permute(x, dims=dims[:-2] + (dims[-1], dims[-2]))


matmul = Primitive("matmul", MATMUL, np.matmul, _matmul_shape,
                   lambda g, out, a, b: (matmul(g, _swap_last(b)), matmul(_swap_last(a), g)),
                   "Σ_k a[..., m, k] * b[..., k, n]")


# -- convolution (NCHW, weight OIHW) --------------------------------------------------------------

def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _windows(x, kernel_size, stride, padding, dilation, fill=0.0):
    """x[N, C, H, W] -> the view [N, C, OH, OW, KH, KW] of every window (padding filled)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def _scatter_windows(values, in_shape, kernel_size, stride, padding, dilation):
    """The transpose of _windows: add values[N, C, OH, OW, KH, KW] back into an [N, C, H, W] image."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    n, c, h, w = in_shape
    oh, ow = values.shape[2:4]
    out = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=values.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw] += values[..., i, j]
    return out[:, :, ph: ph + h, pw: pw + w]


def _check_window_args(kernel_size, stride, padding, dilation):
    """Refuse what torch refuses before any arithmetic uses it: a stride or dilation of 0 would
    divide by zero, a negative padding would index before the image, a kernel of 0 has no window."""
    for name, pair, least in (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                              ("padding", padding, 0), ("dilation", dilation, 1)):
        if any(v < least for v in pair):
            raise ArgumentError(f"{name} must be {'non-negative' if least == 0 else 'positive'}, "
                                f"got {name}={tuple(pair)}")


def _conv_out_shape(in_shape, out_channels, kernel_size, stride, padding, dilation):
    _check_window_args(kernel_size, stride, padding, dilation)
    n, c, h, w = in_shape
    oh, ow = (_out_size(s, k, st, p, d) for s, k, st, p, d in zip((h, w), kernel_size, stride, padding, dilation))
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"the {kernel_size[0]}x{kernel_size[1]} window (stride {stride}, padding {padding}, "
                         f"dilation {dilation}) does not fit in the {h}x{w} input {_fmt(in_shape)}: "
                         f"the output size {oh}x{ow} is too small")
    return (n, out_channels, oh, ow)


def _conv2d_shape(x, w, stride, padding, dilation):
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise ShapeError(f"expects input [N, C, H, W] and weight [O, C, KH, KW], got {_fmt(x.shape)} and {_fmt(w.shape)}")
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"the input {_fmt(x.shape)} has {x.shape[1]} channels but the weight {_fmt(w.shape)} "
                         f"expects {w.shape[1]}")
    if 0 in w.shape:        # (torch returns a [N, 0, ...] result for 0 input channels, not zeros)
        raise ShapeError(f"the weight {_fmt(w.shape)} is empty: out_channels, in_channels and the kernel "
                         "size must be positive")
    return _conv_out_shape(x.shape, w.shape[0], w.shape[2:], stride, padding, dilation), promote([x.dtype, w.dtype])


def _conv2d_impl(x, w, stride, padding, dilation):
    win = _windows(x, w.shape[2:], stride, padding, dilation)
    return np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)


def _conv2d_grad_input_impl(g, w, in_shape, stride, padding, dilation):
    cols = np.tensordot(g, w, axes=([1], [0])).transpose(0, 3, 1, 2, 4, 5)   # [N, C, OH, OW, KH, KW]
    return _scatter_windows(cols, in_shape, w.shape[2:], stride, padding, dilation)


def _conv2d_grad_weight_impl(x, g, weight_shape, stride, padding, dilation):
    win = _windows(x, weight_shape[2:], stride, padding, dilation)
    return np.tensordot(g, win, axes=([0, 2, 3], [0, 2, 3]))


conv2d = Primitive(
    "conv2d", CONV, _conv2d_impl, _conv2d_shape,
    lambda g, out, x, w, **a: (conv2d_grad_input(g, w, in_shape=x.shape, **a),
                               conv2d_grad_weight(x, g, weight_shape=w.shape, **a)),
    "y[n,o,i,j] = Σ_c,di,dj x[n, c, i·s + di·d - p, j·s + dj·d - p] · w[o, c, di, dj]")
conv2d_grad_input = Primitive(
    "conv2d_grad_input", CONV, _conv2d_grad_input_impl,
    lambda g, w, in_shape, **a: (tuple(in_shape), promote([g.dtype, w.dtype])),
    lambda c, out, g, w, in_shape, **a: (conv2d(c, w, **a), conv2d_grad_weight(c, g, weight_shape=w.shape, **a)),
    "the transpose of conv2d in x: dx = conv2dᵀ(g, w)")
conv2d_grad_weight = Primitive(
    "conv2d_grad_weight", CONV, _conv2d_grad_weight_impl,
    lambda x, g, weight_shape, **a: (tuple(weight_shape), promote([x.dtype, g.dtype])),
    lambda c, out, x, g, weight_shape, **a: (conv2d_grad_input(g, c, in_shape=x.shape, **a), conv2d(x, c, **a)),
    "dw[o,c,di,dj] = Σ_n,i,j g[n,o,i,j] · x[n, c, i·s + di·d - p, j·s + dj·d - p]")


# -- windows (pooling) ---------------------------------------------------------------------------

def _window_shape(x, kernel_size, stride, padding, dilation=(1, 1)):
    if len(x.shape) != 4:
        raise ShapeError(f"expects an input [N, C, H, W], got {_fmt(x.shape)}")
    _check_window_args(kernel_size, stride, padding, dilation)
    if any(p > k // 2 for k, p in zip(kernel_size, padding)):
        raise ArgumentError(f"padding={tuple(padding)} must be at most half the kernel size {tuple(kernel_size)}")
    return _conv_out_shape(x.shape, x.shape[1], kernel_size, stride, padding, dilation)


def _flat_windows(win):
    """[N, C, OH, OW, KH, KW] -> [N, C, OH, OW, KH·KW] (sizes spelled out: an empty batch has no -1)."""
    return win.reshape(win.shape[:4] + (win.shape[4] * win.shape[5],))


def _window_argmax_impl(x, **w):
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min if x.dtype.kind in "iu" else False
    win = _windows(x, fill=fill, **w)
    return np.argmax(_flat_windows(win), axis=-1).astype(np.int64)


def _window_gather_impl(x, idx, **w):
    win = _windows(x, **w)
    return np.take_along_axis(_flat_windows(win), idx[..., None], axis=-1)[..., 0]


def _window_scatter_impl(g, idx, in_shape, **w):
    kh, kw = w["kernel_size"]
    values = (np.arange(kh * kw) == idx[..., None]) * g[..., None]
    return _scatter_windows(values.reshape(g.shape + (kh, kw)), in_shape, **w)


window_argmax = Primitive(
    "window_argmax", WINDOW, _window_argmax_impl, lambda x, **w: (_window_shape(x, **w), "int64"),
    formula="the offset of the first max inside each window (padding is -inf)")
window_gather = Primitive(
    "window_gather", WINDOW, _window_gather_impl, lambda x, idx, **w: (idx.shape, x.dtype),
    lambda g, out, x, idx, **w: (window_scatter(g, idx, in_shape=x.shape, **w), None),
    "y[n,c,i,j] = the element at offset idx[n,c,i,j] of window (i, j)")
window_scatter = Primitive(
    "window_scatter", WINDOW, _window_scatter_impl, lambda g, idx, in_shape, **w: (tuple(in_shape), g.dtype),
    lambda c, out, g, idx, in_shape, **w: (window_gather(c, idx, **w), None),
    "the transpose of window_gather: g added at each window's offset")
window_sum = Primitive(
    "window_sum", WINDOW, lambda x, **w: _windows(x, **w).sum(axis=(-2, -1)),
    lambda x, **w: (_window_shape(x, **w), x.dtype),
    lambda g, out, x, **w: (window_sum_transpose(g, in_shape=x.shape, **w),),
    "y[n,c,i,j] = Σ of window (i, j) (padding is 0)")
window_sum_transpose = Primitive(
    "window_sum_transpose", WINDOW,
    lambda g, in_shape, **w: _scatter_windows(np.broadcast_to(g[..., None, None], g.shape + tuple(w["kernel_size"])),
                                              in_shape, **w),
    lambda g, in_shape, **w: (tuple(in_shape), g.dtype),
    lambda c, out, g, in_shape, **w: (window_sum(c, **w),),
    "the transpose of window_sum: g added to every cell of its window")


# -- sources -------------------------------------------------------------------------------------

def _iota_impl(shape, dim, dtype):
    index = np.arange(shape[dim], dtype=dtype).reshape([-1 if i == dim else 1 for i in range(len(shape))])
    return np.broadcast_to(index, shape)


def _rand_shape(seed, shape):
    if seed.dtype not in ("int32", "int64") or seed.shape != ():
        raise DTypeError(f"the seed must be an integer scalar, got {seed.dtype}{_fmt(seed.shape)}")
    return tuple(shape), "float32"


iota = Primitive("iota", SOURCE, _iota_impl, lambda shape, dim, dtype: (tuple(shape), dtype),
                 formula="0, 1, 2, ... along dim")
rand = Primitive("rand", SOURCE, lambda seed, shape: philox_uniform(int(seed), shape), _rand_shape,
                 formula="U[0, 1) from Philox(seed, element index), as Triton's tl.rand")

__all__ = sorted(name for name, p in globals().items() if isinstance(p, Primitive)) + \
    ["slice", "f32", "f64", "i32", "i64", "b8", "inf", "nan"]


def __getattr__(name):
    if name == "slice":           # `from ops.primitives import *` gives the printed program `slice`
        return slice_
    raise AttributeError(name)


PRIMITIVES = REGISTRY
