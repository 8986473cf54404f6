"""Random programs (hypothesis): chainrule equals torch, and no pass changes a result.

A program is 3-15 ops drawn from a table that maps each op to a chainrule builder
(written with `ops as O`) and a torch builder, applied to 1-3 random float64 inputs whose
shapes broadcast against each other (primes, size-1 dimensions, scalars). The table covers
every kernel family: pointwise, broadcasts, reductions, row kernels (softmax, layer_norm,
batch_norm), layout views, matmul, conv2d (its weight scaled by a program value, so all
three conv kernels run) and pooling (any value of 2-5 dims seen as images). Its last
value is reduced to a scalar with a random weighting (an array of weights, or a sum or
mean times a number). We check:

* `C.value_and_grad(..., backend="reference")` and `C.compile(...)` equal torch's value
  and autograd gradients with respect to every input;
* the traced forward graph and the joint graph (`C.grad_graph`) run by the reference
  executor equal torch, before and after each pass (DCE, CSE, constant folding, algebraic
  identities, the whole of `simplify`), and every pass leaves the result unchanged;
* fewer programs through the generated Triton kernels (`backend="interpret"`, float64)
  equal torch too.

While a program is drawn its values are computed in torch, so an op is only chosen where
it is safe: no kink (relu, abs, max, a comparison) is applied within 1e-6 of its kink,
no denominator is near zero, exp sees bounded inputs, and every value stays finite.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compiler as C
import ops as O
from ops.evaluate import run_graph
from tests.helpers import nonzero

KINK = 1e-6          # distance a kink op keeps from its kink
BOUND = 1e4          # largest magnitude a value may reach
TOLERANCE = 1e-6     # chainrule vs torch, float64: relative error (a chain of up to 15 ops, var and
                     # softmax among them, grows roundoff past 1e-7 now and then)
PASS_TOLERANCE = 1e-12   # a graph before vs after a pass
KERNEL_TOLERANCE = 1e-5  # the Triton kernels, float64: they sum in other orders (blocks, fused recomputation),
                         # so a gradient that cancels to exactly 0 in torch keeps ~1e-14 of noise (vs FLOOR)
# A gradient that is zero in exact arithmetic (x / x) comes out as rounding noise of either
# sign, so errors are relative to max(|want|, FLOOR), not to |want| alone.
FLOOR = 1e-8


# -- the op table: name -> (chainrule builder, torch builder), both f(params, *args) ----------

def _index(p):
    return tuple(Ellipsis if i == "..." else slice(*i) if isinstance(i, tuple) else i for i in p["index"])


def _cat_pieces(p, args):
    pieces = list(args)
    if p["head"] is not None:                   # a slice of the first piece along dim
        d = p["dim"] % args[0].ndim
        pieces.append(args[0][(slice(None),) * d + (slice(0, p["head"]),)])
    return pieces


def _o_where(p, a, b, c, d=None):
    cond = {"gt": a > b, "lt": a < b, "ge": a >= b, "le": a <= b}[p["cmp"]] if b is not None else \
        {"gt": a > p["thresh"], "lt": a < p["thresh"], "ge": a >= p["thresh"], "le": a <= p["thresh"]}[p["cmp"]]
    return O.where(cond, c, d if d is not None else p["other"])


def _t_where(p, a, b, c, d=None):
    rhs = b if b is not None else p["thresh"]
    cond = {"gt": a > rhs, "lt": a < rhs, "ge": a >= rhs, "le": a <= rhs}[p["cmp"]]
    return torch.where(cond, c, d if d is not None else p["other"])


def _o_matmul(p, x, y=None):
    return O.matmul(x, y if y is not None else (x.mT if x.ndim >= 2 else x))


def _t_matmul(p, x, y=None):
    return torch.matmul(x, y if y is not None else (x.mT if x.ndim >= 2 else x))


def _image(x):
    """x viewed as NCHW images: a 2-D value is one channel of one image, a 3-D one the
    channels of one image, a 5-D one has its first two dims merged."""
    shape = tuple(x.shape)
    return x.reshape({2: (1, 1) + shape, 3: (1,) + shape, 4: shape, 5: (shape[0] * shape[1],) + shape[2:]}[len(shape)])


def _scalar(x):
    """The first element of x: it scales a conv's weight, so the weight's gradient flows back."""
    return x.reshape((-1,))[0]


def _o_conv2d(p, x, y):
    return O.conv2d(_image(x), _scalar(y) * p["weight"], stride=p["stride"], padding=p["padding"],
                    dilation=p["dilation"])


def _t_conv2d(p, x, y):
    return TF.conv2d(_image(x), _scalar(y) * torch.from_numpy(p["weight"]), stride=p["stride"],
                     padding=p["padding"], dilation=p["dilation"])


def _pooling(lib, p, x):
    module = O if lib == "ops" else TF
    if p["pool"] == "max":
        return module.max_pool2d(_image(x), p["kernel"], p["stride"], p["padding"])
    return module.avg_pool2d(_image(x), p["kernel"], p["stride"], p["padding"], count_include_pad=p["include_pad"])


def _torch_arrays(*arrays):
    return [torch.from_numpy(a) for a in arrays]


def _affine_params(draw, shape):
    """A normalization's weight and bias: a random weight, so that no weighting of the output
    makes its gradient zero in exact arithmetic (a sum of normalized values is constant)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return {"weight": nonzero(rng, shape, 0.5, 1.5), "bias": nonzero(rng, shape, 0.1, 1.0)}


TF = torch.nn.functional

OPS = {
    # unary
    "exp": (lambda p, x: O.exp(x), lambda p, x: torch.exp(x)),
    "tanh": (lambda p, x: O.tanh(x), lambda p, x: torch.tanh(x)),
    "sigmoid": (lambda p, x: O.sigmoid(x), lambda p, x: torch.sigmoid(x)),
    "relu": (lambda p, x: O.relu(x), lambda p, x: TF.relu(x)),
    "leaky_relu": (lambda p, x: O.leaky_relu(x, p["slope"]), lambda p, x: TF.leaky_relu(x, p["slope"])),
    "abs": (lambda p, x: O.abs(x), lambda p, x: torch.abs(x)),
    "neg": (lambda p, x: -x, lambda p, x: -x),
    "sqrt": (lambda p, x: O.sqrt(x * x + 1.0), lambda p, x: torch.sqrt(x * x + 1.0)),
    "log": (lambda p, x: O.log(x * x + 0.5), lambda p, x: torch.log(x * x + 0.5)),
    "log_exp": (lambda p, x: O.log(O.exp(O.tanh(x)) + 1.0), lambda p, x: torch.log(torch.exp(torch.tanh(x)) + 1.0)),
    "pow": (lambda p, x: x ** p["exponent"], lambda p, x: x ** p["exponent"]),
    "affine": (lambda p, x: x * p["a"] + p["b"], lambda p, x: x * p["a"] + p["b"]),
    "rsub": (lambda p, x: p["b"] - x, lambda p, x: p["b"] - x),
    "rdiv": (lambda p, x: p["b"] / (x * x + 1.0), lambda p, x: p["b"] / (x * x + 1.0)),
    # binary, with broadcasting
    "add": (lambda p, x, y: x + y, lambda p, x, y: x + y),
    "sub": (lambda p, x, y: x - y, lambda p, x, y: x - y),
    "mul": (lambda p, x, y: x * y, lambda p, x, y: x * y),
    "div": (lambda p, x, y: x / y, lambda p, x, y: x / y),
    "div_safe": (lambda p, x, y: O.div(x, y * y + 0.5), lambda p, x, y: torch.div(x, y * y + 0.5)),
    "maximum": (lambda p, x, y: O.maximum(x, y), lambda p, x, y: torch.maximum(x, y)),
    "minimum": (lambda p, x, y: O.minimum(x, y), lambda p, x, y: torch.minimum(x, y)),
    # reductions
    "sum": (lambda p, x: O.sum(x, p["dim"], p["keepdim"]), lambda p, x: torch.sum(x, p["dim"], p["keepdim"])),
    "mean": (lambda p, x: O.mean(x, p["dim"], p["keepdim"]), lambda p, x: torch.mean(x, p["dim"], p["keepdim"])),
    "amax": (lambda p, x: O.amax(x, p["dim"], p["keepdim"]), lambda p, x: torch.amax(x, p["dim"], p["keepdim"])),
    "var": (lambda p, x: O.var(x, p["dim"], correction=p["correction"], keepdim=p["keepdim"]),
            lambda p, x: torch.var(x, p["dim"], correction=p["correction"], keepdim=p["keepdim"])),
    "softmax": (lambda p, x: O.softmax(x, p["dim"]), lambda p, x: torch.softmax(x, p["dim"])),
    "log_softmax": (lambda p, x: O.log_softmax(x, p["dim"]), lambda p, x: torch.log_softmax(x, p["dim"])),
    # layout
    "reshape": (lambda p, x: x.reshape(p["shape"]), lambda p, x: x.reshape(p["shape"])),
    "permute": (lambda p, x: O.permute(x, p["dims"]), lambda p, x: torch.permute(x, p["dims"])),
    "transpose": (lambda p, x: O.transpose(x, p["dim0"], p["dim1"]),
                  lambda p, x: torch.transpose(x, p["dim0"], p["dim1"])),
    "flatten": (lambda p, x: O.flatten(x, p["start"], p["end"]), lambda p, x: torch.flatten(x, p["start"], p["end"])),
    "unsqueeze": (lambda p, x: x.unsqueeze(p["dim"]), lambda p, x: x.unsqueeze(p["dim"])),
    "expand": (lambda p, x: x.expand(p["shape"]), lambda p, x: x.expand(p["shape"])),
    "getitem": (lambda p, x: x[_index(p)], lambda p, x: x[_index(p)]),
    "cat": (lambda p, *xs: O.cat(_cat_pieces(p, xs), p["dim"]), lambda p, *xs: torch.cat(_cat_pieces(p, xs), p["dim"])),
    "matmul": (_o_matmul, _t_matmul),
    # windows and normalizations
    "conv2d": (_o_conv2d, _t_conv2d),
    "pool2d": (lambda p, x: _pooling("ops", p, x), lambda p, x: _pooling("torch", p, x)),
    "layer_norm": (lambda p, x: O.layer_norm(x, x.shape[-p["dims"]:], p["weight"], p["bias"]),
                   lambda p, x: TF.layer_norm(x, x.shape[-p["dims"]:], *_torch_arrays(p["weight"], p["bias"]))),
    "batch_norm": (lambda p, x: O.batch_norm(x, None, None, p["weight"], p["bias"], training=True),
                   lambda p, x: TF.batch_norm(x, None, None, *_torch_arrays(p["weight"], p["bias"]), training=True)),
    "where": (_o_where, _t_where),
}


# -- drawing a program ------------------------------------------------------------------------

def _broadcasts(*shapes):
    try:
        torch.broadcast_shapes(*shapes)
        return True
    except RuntimeError:
        return False


def _pick(draw, pool, accept=lambda t: True):
    """A pool index among values `accept` likes; shrinks towards the most recent one."""
    candidates = [i for i, t in enumerate(pool) if accept(t)]
    if not candidates:
        return None
    return candidates[len(candidates) - 1 - draw(st.integers(0, len(candidates) - 1))]


def _dims_arg(draw, ndim):
    """A dim argument: one int (maybe negative) or a tuple of dims."""
    dims = sorted(draw(st.sets(st.integers(0, ndim - 1), min_size=1, max_size=ndim)))
    if len(dims) == 1 and draw(st.booleans()):
        return dims[0] - ndim if draw(st.booleans()) else dims[0]
    return tuple(dims)


def _as_tuple(dim, ndim):
    return tuple(d % ndim for d in ((dim,) if isinstance(dim, int) else dim))


def _factor(n):
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


def _far_from_kink(t):
    return t.numel() == 0 or bool(t.abs().min() > KINK)


def _ties_are_clean(x, dims):
    """For amax: the top two of each reduced slice are equal (an exact tie, which both sides
    split evenly) or clearly apart."""
    rest = [d for d in range(x.ndim) if d not in dims]
    flat = x.permute(rest + list(dims)).reshape(-1, math.prod(x.shape[d] for d in dims))
    if flat.shape[1] < 2:
        return True
    top = flat.sort(dim=1, descending=True).values
    gap = top[:, 0] - top[:, 1]
    return bool(((gap == 0) | (gap > KINK)).all())


def _plan(draw, name, pool):
    """(operand indices, params) for op `name` over the current pool, or None if it does
    not fit here. Value conditions (kinks, denominators) are checked on the torch values."""
    sf = st.sampled_from
    if name in ("exp", "tanh", "sigmoid", "relu", "leaky_relu", "abs", "neg", "sqrt", "log", "log_exp",
                "pow", "affine", "rsub", "rdiv"):
        i = _pick(draw, pool)
        x = pool[i]
        if name == "exp" and not bool(x.abs().max() < 4):
            return None
        if name in ("relu", "leaky_relu", "abs") and not _far_from_kink(x):
            return None
        params = {}
        if name == "leaky_relu":
            params = {"slope": draw(sf([0.01, 0.2, 0.5]))}
        elif name == "pow":
            params = {"exponent": draw(sf([2, 3, 2.0]))}
        elif name in ("affine", "rsub", "rdiv"):
            params = {"a": draw(sf([0.5, -1.5, 2.0, 3])), "b": draw(sf([0.25, -1.0, 2, 1.5]))}
        return (i,), params
    if name in ("add", "sub", "mul", "div", "div_safe", "maximum", "minimum"):
        i = _pick(draw, pool)
        j = _pick(draw, pool, lambda t: _broadcasts(t.shape, pool[i].shape))
        x, y = pool[i], pool[j]
        if name == "div" and not bool(y.abs().min() > 0.25):
            return None
        if name in ("maximum", "minimum") and i != j and not _far_from_kink(x - y):
            return None
        return (i, j), {}
    if name in ("sum", "mean", "amax", "var"):
        i = _pick(draw, pool, lambda t: t.ndim >= 1)
        if i is None:
            return None
        x = pool[i]
        dim = _dims_arg(draw, x.ndim)
        params = {"dim": dim, "keepdim": draw(st.booleans())}
        dims = _as_tuple(dim, x.ndim)
        if name == "var":
            params["correction"] = draw(sf([1, 0]))
            if math.prod(x.shape[d] for d in dims) - params["correction"] < 1:
                return None
        if name == "amax" and not _ties_are_clean(x, dims):
            return None
        return (i,), params
    if name in ("softmax", "log_softmax"):
        i = _pick(draw, pool, lambda t: t.ndim >= 1)
        if i is None:
            return None
        ndim = pool[i].ndim
        return (i,), {"dim": draw(st.integers(-ndim, ndim - 1))}
    if name == "reshape":
        i = _pick(draw, pool)
        x = pool[i]
        parts = _factor(x.numel()) + [1] * draw(st.integers(0, 2))
        parts = draw(st.permutations(parts))
        rank = draw(st.integers(0 if x.numel() == 1 else 1, min(4, max(len(parts), 1))))
        shape = [1] * rank
        for k, f in enumerate(parts):
            if rank:
                shape[draw(st.integers(0, rank - 1))] *= f
        if rank and draw(st.booleans()):
            shape[draw(st.integers(0, rank - 1))] = -1
        return (i,), {"shape": tuple(shape)}
    if name in ("permute", "transpose"):
        i = _pick(draw, pool, lambda t: t.ndim >= 2)
        if i is None:
            return None
        ndim = pool[i].ndim
        if name == "permute":
            return (i,), {"dims": tuple(draw(st.permutations(range(ndim))))}
        return (i,), {"dim0": draw(st.integers(-ndim, ndim - 1)), "dim1": draw(st.integers(-ndim, ndim - 1))}
    if name == "flatten":
        i = _pick(draw, pool)
        ndim = pool[i].ndim
        if ndim == 0:
            return (i,), {"start": 0, "end": -1}
        start = draw(st.integers(0, ndim - 1))
        end = draw(st.integers(start, ndim - 1))
        return (i,), {"start": start - ndim if draw(st.booleans()) else start, "end": end}
    if name == "unsqueeze":
        i = _pick(draw, pool, lambda t: t.ndim < 5)
        if i is None:
            return None
        ndim = pool[i].ndim
        return (i,), {"dim": draw(st.integers(-ndim - 1, ndim))}
    if name == "expand":
        i = _pick(draw, pool, lambda t: 1 in t.shape or t.ndim < 3)
        if i is None:
            return None
        x = pool[i]
        shape = [draw(sf([1, 2, 3])) if d == 1 else d for d in x.shape]
        if draw(st.booleans()):
            shape = [draw(sf([2, 3]))] + shape
        if x.ndim and draw(st.booleans()):
            shape[-1 - draw(st.integers(0, x.ndim - 1))] = -1
        return (i,), {"shape": tuple(shape)}
    if name == "getitem":
        i = _pick(draw, pool, lambda t: t.ndim >= 1)
        if i is None:
            return None
        index = []
        for size in pool[i].shape:
            kind = draw(sf(["all", "slice", "slice", "int"]))
            if kind == "all":
                index.append((None,))
            elif kind == "int":
                index.append(draw(st.integers(-size, size - 1)))
            else:
                start = draw(st.integers(0, size - 1))
                stop = draw(st.integers(start + 1, size + 1))
                index.append((start, stop, draw(st.integers(1, 3))))
        if draw(st.booleans()):         # `...` in place of the leading full slices
            lead = 0
            while lead < len(index) and index[lead] == (None,):
                lead += 1
            index = ["..."] + index[lead:]
        return (i,), {"index": tuple(index)}
    if name == "cat":
        i = _pick(draw, pool, lambda t: t.ndim >= 1)
        if i is None:
            return None
        x = pool[i]
        dim = draw(st.integers(-x.ndim, x.ndim - 1))
        d = dim % x.ndim

        def fits(t):
            return t.ndim == x.ndim and all(a == b for k, (a, b) in enumerate(zip(t.shape, x.shape)) if k != d)

        others = []
        for _ in range(draw(st.integers(0, 2))):
            j = _pick(draw, pool, fits)
            others.append(j)
        head = draw(st.integers(1, x.shape[d])) if not others or draw(st.booleans()) else None
        return (i, *others), {"dim": dim, "head": head}
    if name == "matmul":
        i = _pick(draw, pool, lambda t: t.ndim >= 1)
        if i is None:
            return None
        x = pool[i]
        k = x.shape[-1]

        def fits(t):
            if t.ndim == 1:
                return t.shape[0] == k
            if t.ndim < 2 or t.shape[-2] != k:
                return False
            return x.ndim < 2 or _broadcasts(t.shape[:-2], x.shape[:-2])

        j = _pick(draw, pool, fits) if draw(st.booleans()) else None
        return ((i, j) if j is not None else (i,)), {}
    if name == "where":
        i = _pick(draw, pool)
        a = pool[i]
        params = {"cmp": draw(sf(["gt", "lt", "ge", "le"])), "thresh": draw(sf([0.0, 0.5, -0.3])),
                  "other": draw(sf([0.0, 1.5, -2.0]))}
        j = _pick(draw, pool, lambda t: _broadcasts(t.shape, a.shape)) if draw(st.booleans()) else None
        rhs = pool[j] if j is not None else params["thresh"]
        if not _far_from_kink(a - rhs):
            return None
        shape = torch.broadcast_shapes(a.shape, pool[j].shape if j is not None else ())
        c = _pick(draw, pool, lambda t: _broadcasts(t.shape, shape))
        shape = torch.broadcast_shapes(shape, pool[c].shape)
        d = _pick(draw, pool, lambda t: _broadcasts(t.shape, shape)) if draw(st.booleans()) else None
        return (i, j, c) + ((d,) if d is not None else ()), params
    if name in ("conv2d", "pool2d"):
        return _plan_window(draw, name, pool)
    if name == "layer_norm":
        i = _pick(draw, pool, lambda t: t.ndim >= 1)
        if i is None:
            return None
        dims = draw(st.integers(1, min(2, pool[i].ndim)))
        if math.prod(pool[i].shape[-dims:]) < 2:    # its gradient is 0 (torch's exactly; ours 1e-14 · 1/sqrt(eps))
            return None
        return (i,), {"dims": dims, **_affine_params(draw, tuple(pool[i].shape[-dims:]))}
    if name == "batch_norm":
        i = _pick(draw, pool, lambda t: t.ndim >= 2 and t.numel() > t.shape[1])   # > 1 value per channel
        return None if i is None else ((i,), _affine_params(draw, (pool[i].shape[1],)))
    raise AssertionError(name)


def _plan_window(draw, name, pool):
    """A conv2d or a pool over a value of 2-5 dims seen as images (_image); the window may
    be as large as the padded image, stride and dilation step past it. None where torch
    refuses the arguments (a window larger than the image)."""
    sf = st.sampled_from
    i = _pick(draw, pool, lambda t: 2 <= t.ndim <= 5)
    if i is None:
        return None
    image = _image(pool[i])
    kernel = draw(sf([1, 2, 3, (1, 2), (3, 1)]))
    kh, kw = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    padding = draw(sf([0, 0, 1])) if min(kh, kw) >= 2 or name == "conv2d" else 0
    params = {"kernel": kernel, "stride": draw(sf([1, 1, 2, 3])), "padding": padding}
    if name == "conv2d":
        params["dilation"] = draw(sf([1, 1, 2]))
        out_channels = draw(sf([1, 2, 3]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        params["weight"] = rng.uniform(-1, 1, (out_channels, image.shape[1], kh, kw))
        args = (i, _pick(draw, pool))
    else:
        params.update(pool=draw(sf(["max", "avg"])), include_pad=draw(st.booleans()))
        args = (i,)
    try:
        with torch.no_grad():
            out = OPS[name][1](params, *(pool[a] for a in args))
    except RuntimeError:            # the window does not fit: torch refuses, so do we (tests/misuse)
        return None
    if name == "pool2d" and params["pool"] == "max" and not _window_ties_are_clean(image, params, out.shape):
        return None
    return args, params


def _window_ties_are_clean(image, p, out_shape):
    """For max pooling: in every window the top two are equal (both sides take the first) or
    clearly apart."""
    k = p["kernel"] if isinstance(p["kernel"], tuple) else (p["kernel"], p["kernel"])
    n, c, h, w = image.shape
    flat = TF.pad(image.reshape(n * c, 1, h, w), (p["padding"],) * 4, value=-math.inf)
    windows = TF.unfold(flat, k, stride=p["stride"])            # [N·C, KH·KW, windows]
    windows = windows.transpose(1, 2).reshape(-1, k[0] * k[1])
    if windows.shape[1] < 2:
        return True
    top = windows.sort(dim=1, descending=True).values
    gap = top[:, 0] - top[:, 1]
    return bool(((gap == 0) | (gap > KINK) | torch.isinf(top[:, 1])).all())


def _apply(side, name, params, pool, args):
    values = [pool[a] if a is not None else None for a in args]
    return OPS[name][side](params, *values)


@st.composite
def programs(draw):
    """(inputs, steps, weight): 1-3 float64 arrays, 3-15 ops, the output weighting.

    The program's skeleton (input shapes, length, which op comes next) comes from a NumPy
    generator seeded by hypothesis, so that every example is a fair draw over the whole
    table (hypothesis's own choices lean hard towards its simplest values); operands and
    parameters are hypothesis's choices."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = [int(d) for d in rng.choice([1, 1, 2, 3, 4, 5, 7, 11], size=rng.integers(1, 5))]
    shapes = []
    for _ in range(rng.integers(1, 4)):
        drop = len(base) if rng.random() < 0.1 else min(int(rng.choice([0, 0, 0, 1, 2])), len(base) - 1)
        shapes.append(tuple(1 if rng.random() < 0.25 else d for d in base[drop:]))
    inputs = [np.asarray(nonzero(rng, s, 0.2, 1.5)) for s in shapes]
    pool = [torch.from_numpy(x) for x in inputs]
    steps = []
    names = sorted(OPS)
    for _ in range(rng.integers(3, 16)):
        name = names[rng.integers(len(names))]
        planned = _plan(draw, name, pool)
        value = None
        if planned is not None:
            with torch.no_grad():
                value = _apply(1, name, planned[1], pool, planned[0])
            if not (torch.isfinite(value).all() and value.abs().max() < BOUND and value.numel() > 0):
                value = None
        if value is None:                         # the op does not fit here: a safe one instead
            name, planned = "tanh", ((len(pool) - 1,), {})
            value = torch.tanh(pool[-1])
        steps.append((name, planned[0], planned[1]))
        pool.append(value)
    if rng.random() < 0.75:
        weight = np.asarray(nonzero(rng, tuple(pool[-1].shape), 0.5, 1.5))
    else:                                         # a uniform weighting: the seed of the backward is a splat
        weight = (str(rng.choice(["sum", "mean"])), float(nonzero(rng, (), 0.5, 1.5)))
    return inputs, steps, weight


# -- running a program on both sides ------------------------------------------------------------

def chainrule_fn(steps, weight):
    def program(*xs):
        pool = list(xs)
        for name, args, params in steps:
            pool.append(_apply(0, name, params, pool, args))
        return _weigh(O, pool[-1], weight)
    return program


def _weigh(lib, value, weight):
    """The program's scalar output: sum(value * weight), or c * sum/mean(value)."""
    if isinstance(weight, np.ndarray):
        return lib.sum(value * (weight if lib is O else torch.from_numpy(weight)))
    reduce, c = weight
    return getattr(lib, reduce)(value) * c


def torch_value_and_grads(steps, weight, inputs):
    xs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    pool = list(xs)
    for name, args, params in steps:
        pool.append(_apply(1, name, params, pool, args))
    value = _weigh(torch, pool[-1], weight)
    grads = torch.autograd.grad(value, xs, allow_unused=True)
    grads = [np.zeros(x.shape) if g is None else g.numpy() for g, x in zip(grads, inputs)]
    return value.detach().numpy(), grads


def describe(inputs, steps):
    lines = [f"inputs: {[x.shape for x in inputs]}"]
    for k, (name, args, params) in enumerate(steps):
        lines.append(f"  v{len(inputs) + k} = {name}({', '.join(f'v{a}' if a is not None else '-' for a in args)}) "
                     f"{params}")
    return "\n".join(lines)


def _error(got, want):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), FLOOR))


def _check(label, value, grads, want_value, want_grads, program, tolerance=TOLERANCE):
    assert np.asarray(value).shape == (), f"{label}: value of shape {np.shape(value)}\n{program}"
    err = _error(value, want_value)
    assert err < tolerance, f"{label}: value {value} vs torch {want_value} (rel {err:.2e})\n{program}"
    for k, (got, want) in enumerate(zip(grads, want_grads)):
        assert np.asarray(got).dtype == np.float64, f"{label}: grad {k} is {np.asarray(got).dtype}"
        err = _error(got, want)
        assert err < tolerance, f"{label}: gradient of input {k} differs from torch (rel {err:.2e})\n{program}"


PASSES = [
    ("dce", C.dce),
    ("cse", C.cse),
    ("fold_constants", C.fold_constants),
    ("algebraic", C.algebraic),
    ("algebraic(drop_detach=False)", lambda g: C.algebraic(g, drop_detach=False)),
    ("simplify", C.simplify),
    ("every pass, in turn", lambda g: C.dce(C.algebraic(C.cse(C.fold_constants(g))))),
]


def _check_graph_shape(graph, original, label):
    """A pass keeps the signature, and its nodes stay in topological order."""
    assert [(n.shape, n.dtype) for n in graph.inputs] == [(n.shape, n.dtype) for n in original.inputs], label
    assert [(n.shape, n.dtype) for n in graph.outputs] == [(n.shape, n.dtype) for n in original.outputs], label
    seen = set()
    for node in graph.nodes:
        assert all(i in seen for i in node.inputs), f"{label}: {node} comes before its inputs"
        seen.add(node)
    assert all(o in seen for o in graph.outputs), label


SETTINGS = settings(max_examples=60, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@SETTINGS
@given(programs())
def test_random_program_matches_torch_before_and_after_every_pass(program):
    inputs, steps, weight = program
    text = describe(inputs, steps)
    want_value, want_grads = torch_value_and_grads(steps, weight, inputs)
    fn = chainrule_fn(steps, weight)
    argnums = tuple(range(len(inputs)))

    # the public API: compiled once (trace, autodiff, simplify), run on the reference backend
    value, grads = C.value_and_grad(fn, argnums=argnums, backend="reference")(*inputs)
    _check("value_and_grad", value, grads, want_value, want_grads, text)
    specs = [O.spec(x.shape, "float64") for x in inputs]
    value, grads = C.compile(fn, *specs, grad_argnums=argnums, backend="reference")(*inputs)
    _check("compile", value, grads, want_value, want_grads, text)

    # the graphs themselves, before and after each pass
    forward = C.trace(fn, *specs)
    joint = C.grad_graph(forward, argnums)
    (value,) = run_graph(forward, inputs)
    _check("trace", value, [], want_value, [], text)
    base = run_graph(joint, inputs)
    _check("grad_graph", base[0], base[1:], want_value, want_grads, text)
    for name, transform in PASSES:
        for graph, reference in ((joint, base), (forward, [value])):
            after = transform(graph)
            _check_graph_shape(after, graph, f"{name} on {graph.name}")
            got = run_graph(after, inputs)
            assert len(got) == len(reference)
            for k, (a, b) in enumerate(zip(got, reference)):
                err = _error(a, b)
                assert err < PASS_TOLERANCE, f"{name} changed output {k} of {graph.name} (rel {err:.2e})\n{text}"
        got = run_graph(transform(joint), inputs)
        _check(f"grad_graph + {name}", got[0], got[1:], want_value, want_grads, text)


@settings(SETTINGS, max_examples=8)
@given(programs())
def test_random_program_matches_torch_through_the_triton_kernels(program):
    """The same programs through the generated kernels (Triton's interpreter, in float64):
    every kernel family at the sizes drawn (1, primes, sizes that fill no block)."""
    inputs, steps, weight = program
    want_value, want_grads = torch_value_and_grads(steps, weight, inputs)
    argnums = tuple(range(len(inputs)))
    value, grads = C.value_and_grad(chainrule_fn(steps, weight), argnums=argnums, backend="interpret")(*inputs)
    _check("interpret", value, grads, want_value, want_grads, describe(inputs, steps), KERNEL_TOLERANCE)


def test_the_table_covers_every_kind_of_op():
    """The generator's table names the ops the brief asks for (a guard against a table
    that silently shrinks)."""
    needed = {"exp", "tanh", "sigmoid", "relu", "leaky_relu", "abs", "neg", "sqrt", "log", "add", "sub", "mul",
              "div", "maximum", "minimum", "sum", "mean", "amax", "var", "softmax", "log_softmax", "reshape",
              "permute", "transpose", "flatten", "unsqueeze", "matmul", "where", "cat", "getitem", "conv2d", "pool2d",
              "layer_norm", "batch_norm"}
    assert needed <= set(OPS)
