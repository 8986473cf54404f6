"""Central finite differences against the derived gradients, in float64 on the reference backend.

For every differentiable op (functional and primitive): the directional derivative of
L(x) = sum(f(x) * r) along a few random directions v, (L(x + h v) - L(x - h v)) / 2h,
equals <grad L, v> from `C.grad`. Inputs stay away from kinks (relu at 0, ties of a max,
abs at 0, the bounds of a clamp) by more than the step can move them. This also checks
gradients torch does not have (cross_entropy's class weights, batch_norm's running
statistics) and, through Hessian-vector products, the vjps of the vjps.
"""
import math

import numpy as np
import pytest

import compiler as C
import ops as O
from ops import primitives as P
from tests.helpers import nonzero, positive

H = 1e-6
TOL = 1e-6


def fd_check(f, inputs, rng, wrt=None, directions=3, h=H, tol=TOL, eps=np.finfo(np.float64).eps):
    """Compare C.grad of sum(f(*inputs) * r) with central differences along random directions.
    The error allowed is tol relative to the derivative, plus the roundoff of the difference
    quotient itself (about eps * |L| / h: a flat sigmoid's derivative is tiny next to L)."""
    inputs = [np.asarray(a) for a in inputs]
    if wrt is None:
        wrt = tuple(i for i, a in enumerate(inputs) if a.dtype.kind == "f")
    wrt = tuple(wrt)
    assert wrt, "nothing to differentiate"
    out = C.jit(f, backend="reference")(*inputs)
    r = np.asarray(nonzero(rng, out.shape))

    def loss(*args):
        return O.sum(f(*args[:-1]) * args[-1])

    grads = C.grad(loss, argnums=wrt, backend="reference")(*inputs, r)
    value = C.jit(loss, backend="reference")
    gnorm = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    for _ in range(directions):
        v = {i: rng.standard_normal(inputs[i].shape) for i in wrt}
        vnorm = math.sqrt(sum(float(np.sum(d * d)) for d in v.values()))
        plus = [a + h * v[i] if i in v else a for i, a in enumerate(inputs)]
        minus = [a - h * v[i] if i in v else a for i, a in enumerate(inputs)]
        lp, lm = float(value(*plus, r)), float(value(*minus, r))
        fd = (lp - lm) / (2 * h)
        an = sum(float(np.sum(g * v[i])) for i, g in zip(wrt, grads))
        # the 1e-3 term guards a directional derivative that cancels to ~0
        allowed = tol * (abs(an) + 1e-3 * gnorm * vnorm) + 10 * eps * (abs(lp) + abs(lm)) / (2 * h) + 1e-15
        assert abs(fd - an) <= allowed, f"directional derivative: analytic {an!r}, finite differences {fd!r}"
    return grads


def case(id, fn, *specs, make=nonzero, wrt=None, h=H, tol=TOL, eps=np.finfo(np.float64).eps):
    return pytest.param(fn, specs, make, wrt, h, tol, eps, id=id)


def draw(rng, specs, make):
    return [s(rng) if callable(s) else make(rng, s) for s in specs]


def distinct(rng, shape, gap=0.01, low=0.1):
    """Values at least `gap` apart (no ties for a max to flip between), never near zero."""
    n = math.prod(shape)
    values = low + gap * np.arange(n) + rng.uniform(0, gap / 2)
    return (rng.permutation(values) * rng.choice([-1.0, 1.0])).reshape(shape)


def away_from(points, make=nonzero, margin=0.02):
    """make's draw, pushed at least `margin` away from each of `points` (the kinks)."""
    def draw(rng, shape):
        x = np.asarray(make(rng, shape))
        for p in points:
            near = np.abs(x - p) < margin
            x = np.where(near, p + margin * np.where(x >= p, 1.0, -1.0) * 2, x)
        return x
    return draw


# -- primitives ----------------------------------------------------------------------------------

def _pair_inputs(a, b):
    """Input makers for a binary op with shapes a and b whose values are all at least 0.01
    apart (no ties for maximum/minimum to flip between)."""
    n, m = math.prod(a), math.prod(b)
    state = {}

    def first(rng):
        state["pool"] = distinct(rng, (n + m,)) * rng.choice([-1.0, 1.0], n + m)
        return state["pool"][:n].reshape(a)

    def second(rng):
        return state["pool"][n:].reshape(b)
    return first, second


BINARY_SHAPES = [((), ()), ((5,), ()), ((3, 1, 5), (4, 1)), ((2, 3), (2, 3)), ((1, 7), (7, 1))]


def primitive_cases():
    for shape in [(), (7,), (3, 1, 5)]:
        yield case(f"neg-{shape}", P.neg, shape)
        yield case(f"exp-{shape}", P.exp, shape)
        yield case(f"log-{shape}", P.log, shape, make=positive)
        yield case(f"sqrt-{shape}", P.sqrt, shape, make=positive)
        yield case(f"abs-{shape}", P.abs, shape)
        yield case(f"tanh-{shape}", P.tanh, shape)
        yield case(f"sigmoid-{shape}", P.sigmoid, shape, make=lambda r, s: nonzero(r, s, 0.1, 10.0))
    for a, b in BINARY_SHAPES:
        yield case(f"add-{a}-{b}", P.add, a, b)
        yield case(f"sub-{a}-{b}", P.sub, a, b)
        yield case(f"mul-{a}-{b}", P.mul, a, b)
        yield case(f"div-{a}-{b}", P.div, a, b)
        yield case(f"pow-{a}-{b}", P.pow, lambda r, a=a: positive(r, a, 0.3, 2.0), b)
        yield case(f"maximum-{a}-{b}", P.maximum, *_pair_inputs(a, b))
        yield case(f"minimum-{a}-{b}", P.minimum, *_pair_inputs(a, b))
    for c, a, b in [((4, 5), (4, 5), (4, 5)), ((3, 1, 5), (4, 1), (5,)), ((), (2, 3), ())]:
        yield case(f"where-{c}-{a}-{b}", P.where, lambda r, c=c: r.random(c) < 0.5, a, b)
    # through float32: a large step (the function is linear) and float32's roundoff
    f32 = dict(h=1e-2, tol=1e-4, eps=np.finfo(np.float32).eps)
    yield case("cast-f32-f64", lambda x: P.cast(P.cast(x, dtype="float32"), dtype="float64"), (3, 4), **f32)
    yield case("cast-f64-f64-via-f32-scale", lambda x: P.cast(x * 2.0, dtype="float32") * 3.0, (5,), **f32)
    for shape, dims, keepdim in [((3, 4, 5), (0,), False), ((3, 4, 5), (1, 2), True), ((7,), (0,), False),
                                 ((2, 1, 3), (0, 1, 2), True)]:
        yield case(f"reduce_sum-{shape}-{dims}-{keepdim}", lambda x, d=dims, k=keepdim: P.reduce_sum(x, dims=d, keepdim=k),
                   shape)
        yield case(f"reduce_max-{shape}-{dims}-{keepdim}", lambda x, d=dims, k=keepdim: P.reduce_max(x, dims=d, keepdim=k),
                   shape, make=distinct)
    yield case("reshape", lambda x: P.reshape(x, shape=(4, 1, 6)), (2, 3, 4))
    yield case("expand", lambda x: P.expand(x, shape=(2, 5, 3)), (1, 5, 1))
    yield case("expand-0d", lambda x: P.expand(x, shape=(2, 3)), ())
    yield case("permute", lambda x: P.permute(x, dims=(2, 0, 1)), (2, 3, 4))
    yield case("slice", lambda x: P.slice_(x, starts=(1, 0), stops=(4, 6), steps=(2, 3)), (5, 6))
    yield case("slice-3d", lambda x: P.slice_(x, starts=(0, 1, 1), stops=(2, 4, 5), steps=(1, 2, 1)), (2, 4, 5))
    yield case("pad", lambda x: P.pad(x, lo=(1, 0), hi=(0, 2), interior=(1, 2)), (3, 4))
    yield case("pad-3d", lambda x: P.pad(x, lo=(0, 2, 1), hi=(1, 0, 0), interior=(0, 0, 3)), (2, 3, 2))
    yield case("cat", lambda x, y, z: P.cat(x, y, z, dim=1), (2, 3), (2, 1), (2, 4))
    yield case("matmul", P.matmul, (3, 4), (4, 5))
    yield case("matmul-batched", P.matmul, (2, 3, 4), (2, 4, 2))


@pytest.mark.parametrize("fn, specs, make, wrt, h, tol, eps", list(primitive_cases()))
def test_primitives(fn, specs, make, wrt, h, tol, eps, rng):
    fd_check(fn, draw(rng, specs, make), rng, wrt=wrt, h=h, tol=tol, eps=eps)


def _out(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


CONV_CASES = [
    # in_shape, w_shape, stride, padding, dilation
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 3, 8, 8), (2, 3, 3, 3), (2, 2), (0, 0), (1, 1)),
    ((1, 2, 9, 7), (3, 2, 2, 3), (2, 3), (1, 0), (1, 1)),
    ((2, 2, 9, 9), (2, 2, 3, 2), (1, 1), (2, 1), (2, 3)),
    ((1, 3, 10, 7), (2, 3, 1, 1), (3, 3), (0, 0), (1, 1)),
]


@pytest.mark.parametrize("in_shape, w_shape, stride, padding, dilation", CONV_CASES)
def test_conv_primitives(in_shape, w_shape, stride, padding, dilation, rng):
    a = dict(stride=stride, padding=padding, dilation=dilation)
    out_shape = (in_shape[0], w_shape[0]) + tuple(_out(n, k, s, p, d) for n, k, s, p, d in
                                                  zip(in_shape[2:], w_shape[2:], stride, padding, dilation))
    x, w, g = nonzero(rng, in_shape), nonzero(rng, w_shape), nonzero(rng, out_shape)
    fd_check(lambda x, w: P.conv2d(x, w, **a), [x, w], rng)
    fd_check(lambda g, w: P.conv2d_grad_input(g, w, in_shape=in_shape, **a), [g, w], rng)
    fd_check(lambda x, g: P.conv2d_grad_weight(x, g, weight_shape=w_shape, **a), [x, g], rng)


WINDOW_CASES = [
    # in_shape, kernel, stride, padding, dilation
    ((2, 3, 6, 7), (2, 2), (2, 2), (0, 0), (1, 1)),
    ((2, 2, 6, 7), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 7, 5), (2, 3), (1, 2), (1, 1), (1, 1)),
    ((2, 2, 9, 8), (3, 2), (3, 1), (0, 1), (2, 1)),
    ((1, 3, 8, 9), (2, 2), (3, 4), (1, 0), (1, 2)),
]


@pytest.mark.parametrize("in_shape, kernel, stride, padding, dilation", WINDOW_CASES)
def test_window_primitives(in_shape, kernel, stride, padding, dilation, rng):
    w = dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation)
    out_shape = in_shape[:2] + tuple(_out(n, k, s, p, d) for n, k, s, p, d in
                                     zip(in_shape[2:], kernel, stride, padding, dilation))
    x, g = distinct(rng, in_shape), nonzero(rng, out_shape)
    idx = rng.integers(0, kernel[0] * kernel[1], out_shape)
    fd_check(lambda x, i: P.window_gather(x, i, **w), [x, idx], rng)
    fd_check(lambda g, i: P.window_scatter(g, i, in_shape=in_shape, **w), [g, idx], rng)
    fd_check(lambda x: P.window_sum(x, **w), [x], rng)
    fd_check(lambda g: P.window_sum_transpose(g, in_shape=in_shape, **w), [g], rng)
    fd_check(lambda x: P.window_gather(x, P.window_argmax(x, **w), **w), [x], rng)


def test_non_differentiable_primitives_have_zero_gradient(rng):
    """sign, comparisons, argmax, window_argmax, one_hot are piecewise constant: away from
    their jumps the finite difference is 0, and so is the gradient through them."""
    x, y = distinct(rng, (4, 6)), nonzero(rng, (6,))
    fns = [
        lambda x, y: P.sign(x) * y,
        lambda x, y: P.cast(P.gt(x, y), dtype="float64") + P.cast(P.le(y, x), dtype="float64"),
        lambda x, y: P.cast(P.argmax(x, dim=1, keepdim=False), dtype="float64"),
        lambda x, y: P.cast(P.window_argmax(P.reshape(x, shape=(1, 1, 4, 6)), kernel_size=(2, 2), stride=(1, 2),
                                            padding=(1, 0), dilation=(1, 1)), dtype="float64"),
        lambda x, y: O.to(O.one_hot(O.argmax(x, 1), 6), "float64") * y,
    ]
    for fn in fns:
        grads = fd_check(fn, [x, y], rng, wrt=(0,))
        assert not np.any(grads[0])


# -- functional ops ------------------------------------------------------------------------------

def functional_cases():
    s = (2, 3, 4)
    for name, fn, make in [("neg", O.neg, nonzero), ("exp", O.exp, nonzero), ("log", O.log, positive),
                           ("sqrt", O.sqrt, positive), ("abs", O.abs, nonzero), ("relu", O.relu, nonzero),
                           ("leaky_relu", O.leaky_relu, nonzero), ("leaky_relu-0.3", lambda x: O.leaky_relu(x, 0.3), nonzero),
                           ("sigmoid", O.sigmoid, nonzero), ("tanh", O.tanh, nonzero),
                           ("clamp", lambda x: O.clamp(x, -0.5, 0.7), away_from([-0.5, 0.7])),
                           ("clamp-min", lambda x: O.clamp(x, min=0.3), away_from([0.3])),
                           ("to-f64", lambda x: O.to(x, "float64") * x, nonzero)]:
        yield case(name, fn, s, make=make)
    for a, b in [((3, 1, 5), (4, 1)), ((), (3,))]:
        yield case(f"add-{a}-{b}", lambda x, y: O.add(x, y, alpha=1.5), a, b)
        yield case(f"sub-{a}-{b}", lambda x, y: O.sub(x, y, alpha=-2), a, b)
        yield case(f"mul-{a}-{b}", O.mul, a, b)
        yield case(f"div-{a}-{b}", O.div, a, b)
        yield case(f"pow-{a}-{b}", O.pow, lambda r, a=a: positive(r, a, 0.3, 2.0), b)
        yield case(f"maximum-{a}-{b}", O.maximum, *_pair_inputs(a, b))
        yield case(f"minimum-{a}-{b}", O.minimum, *_pair_inputs(a, b))
        yield case(f"where-{a}-{b}", lambda x, y: O.where(x > 0, x * y, y - x), a, b)
    yield case("clamp-tensor", lambda x, lo, hi: O.clamp(x, lo, hi), *_pair_inputs((4, 5), (5,)),
               lambda r: positive(r, (4, 1), 0.02, 0.08))
    ops = [("x+y", lambda x, y: x + y), ("x-y", lambda x, y: x - y), ("x*y", lambda x, y: x * y),
           ("x/y", lambda x, y: x / y), ("x@y.T", lambda x, y: x @ y.T), ("-x*y", lambda x, y: -x * y),
           ("x**2+y", lambda x, y: x ** 2 + y), ("2/x+y**3", lambda x, y: 2.0 / x + y ** 3),
           ("abs(x)**y", lambda x, y: abs(x) ** y), ("2**x*y", lambda x, y: 2.0 ** x * y)]
    for name, fn in ops:
        yield case(f"Tensor{name}", fn, (3, 4), (3, 4))
    for dim in [None, 1, (0, 2), -1]:
        for keepdim in (False, True):
            k = f"{dim}-{keepdim}"
            yield case(f"sum-{k}", lambda x, d=dim, kd=keepdim: O.sum(x, d, kd), s)
            yield case(f"mean-{k}", lambda x, d=dim, kd=keepdim: O.mean(x, d, kd), s)
            yield case(f"amax-{k}", lambda x, d=dim, kd=keepdim: O.amax(x, () if d is None else d, kd), s, make=distinct)
            yield case(f"amin-{k}", lambda x, d=dim, kd=keepdim: O.amin(x, () if d is None else d, kd), s, make=distinct)
            yield case(f"var-{k}", lambda x, d=dim, kd=keepdim: O.var(x, d, keepdim=kd), s)
            yield case(f"var-c0-{k}", lambda x, d=dim, kd=keepdim: O.var(x, d, correction=0, keepdim=kd), s)
            yield case(f"std-{k}", lambda x, d=dim, kd=keepdim: O.std(x, d, correction=2, keepdim=kd), s)
            if dim is not None:
                yield case(f"logsumexp-{k}", lambda x, d=dim, kd=keepdim: O.logsumexp(x, d, kd), s)
    for dim in [0, 1, -1]:
        yield case(f"softmax-{dim}", lambda x, d=dim: O.softmax(x, d), s)
        yield case(f"log_softmax-{dim}", lambda x, d=dim: O.log_softmax(x, d), s)
    yield case("softmax-shifted", lambda x: O.softmax(x * 3.0 + 50.0, 1), s)   # + 1000 would round off h
    yield case("reshape", lambda x: O.reshape(x, (4, -1)), s)
    yield case("flatten", lambda x: O.flatten(x, 1), s)
    yield case("transpose", lambda x: O.transpose(x, 0, 2), s)
    yield case("permute", lambda x: O.permute(x, (1, 2, 0)), s)
    yield case("unsqueeze", lambda x: O.unsqueeze(x, 1), s)
    yield case("squeeze", lambda x: O.squeeze(x), (1, 3, 1))
    yield case("broadcast_to", lambda x: O.broadcast_to(x, (2, 3, 4)), (3, 1))
    yield case("stack", lambda x, y: O.stack([x, y, x * y], 1), (2, 3), (2, 3))
    yield case("cat", lambda x, y: O.cat([x, y, x], -1), (2, 3), (2, 1))
    for index in [1, (slice(None), 1), (Ellipsis, slice(1, None, 2)), (None, 0, slice(0, 3, 2)), (-1, -1, -1)]:
        yield case(f"getitem-{index}", lambda x, i=index: x[i], s)
    yield case("T", lambda x: x.T, s)
    for a, b in [((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))]:
        yield case(f"matmul-{a}-{b}", O.matmul, a, b)
    yield case("linear", O.linear, (5, 4), (3, 4), (3,))
    yield case("linear-nobias-3d", O.linear, (2, 5, 4), (3, 4))
    for k, st, p in [(2, None, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 1)), (3, 2, 1)]:
        yield case(f"max_pool2d-{k}-{st}-{p}", lambda x, k=k, st=st, p=p: O.max_pool2d(x, k, st, p), (2, 2, 7, 6),
                   make=distinct)
        yield case(f"max_pool2d-dil-{k}-{st}-{p}", lambda x, k=k, st=st, p=p: O.max_pool2d(x, k, st, p, dilation=(1, 2)),
                   (2, 2, 7, 8), make=distinct)
        yield case(f"avg_pool2d-{k}-{st}-{p}", lambda x, k=k, st=st, p=p: O.avg_pool2d(x, k, st, p), (2, 2, 7, 6))
        yield case(f"avg_pool2d-excl-{k}-{st}-{p}",
                   lambda x, k=k, st=st, p=p: O.avg_pool2d(x, k, st, p, count_include_pad=False), (2, 2, 7, 6))
        yield case(f"avg_pool2d-div-{k}-{st}-{p}",
                   lambda x, k=k, st=st, p=p: O.avg_pool2d(x, k, st, p, divisor_override=3), (2, 2, 7, 6))
    for size in [1, (3, 2), (2, 4), (5, 3)]:
        yield case(f"adaptive_avg_pool2d-{size}", lambda x, o=size: O.adaptive_avg_pool2d(x, o), (2, 2, 6, 8))
    yield case("adaptive_avg_pool2d-odd", lambda x: O.adaptive_avg_pool2d(x, (3, 4)), (1, 2, 7, 5))


@pytest.mark.parametrize("fn, specs, make, wrt, h, tol, eps", list(functional_cases()))
def test_functional(fn, specs, make, wrt, h, tol, eps, rng):
    fd_check(fn, draw(rng, specs, make), rng, wrt=wrt, h=h, tol=tol, eps=eps)


@pytest.mark.parametrize("kernel, stride, padding, dilation, bias", [
    ((3, 3), 1, 1, 1, True), ((2, 3), 2, 0, 1, False), ((3, 1), (3, 2), (2, 1), (2, 1), True),
    ((3, 3), 1, "same", 2, True), ((1, 1), 3, "valid", 1, False), ((2, 2), (1, 2), (1, 0), (2, 2), True),
])
def test_conv2d(kernel, stride, padding, dilation, bias, rng):
    x, w, b = nonzero(rng, (2, 3, 9, 8)), nonzero(rng, (4, 3) + kernel), nonzero(rng, (4,))
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    if bias:
        fd_check(lambda x, w, b: O.conv2d(x, w, b, **kw), [x, w, b], rng)
    else:
        fd_check(lambda x, w: O.conv2d(x, w, **kw), [x, w], rng)


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (6, 3), (4, 3, 5)])
def test_batch_norm(shape, rng):
    c = shape[1]
    x, w, b = nonzero(rng, shape) * 2 + 0.5, nonzero(rng, (c,)), nonzero(rng, (c,))
    rm, rv = nonzero(rng, (c,)), positive(rng, (c,))
    fd_check(lambda x, w, b: O.batch_norm(x, None, None, w, b, training=True), [x, w, b], rng)
    fd_check(lambda x: O.batch_norm(x, None, None, training=True, eps=1e-3), [x], rng)
    # evaluation: also the gradient with respect to the running statistics (torch has none)
    fd_check(lambda x, rm, rv, w, b: O.batch_norm(x, rm, rv, w, b, training=False), [x, rm, rv, w, b], rng)


@pytest.mark.parametrize("shape, normalized", [((4, 7), (7,)), ((2, 3, 4, 5), (4, 5)), ((3, 5), 5)])
def test_layer_norm(shape, normalized, rng):
    ns = (normalized,) if isinstance(normalized, int) else normalized
    x, w, b = nonzero(rng, shape) * 2 - 0.5, nonzero(rng, ns), nonzero(rng, ns)
    fd_check(lambda x, w, b: O.layer_norm(x, normalized, w, b), [x, w, b], rng)
    fd_check(lambda x: O.layer_norm(x, normalized, eps=1e-2), [x], rng)


def test_dropout(rng):
    x = nonzero(rng, (30, 40))
    seed = np.int64(rng.integers(0, 2 ** 31))
    fd_check(lambda x, s: O.dropout(x, 0.3, seed=s), [x, seed], rng)
    fd_check(lambda x: O.dropout(x, p=0.6, training=True, seed=int(seed)) * x, [x], rng)


CE_CASES = [
    ((5, 4), {}), ((5, 4), dict(reduction="sum")), ((5, 4), dict(reduction="none")),
    ((3, 4, 5), dict(weight=True)), ((3, 4, 5), dict(ignore_index=1)), ((5, 4), dict(label_smoothing=0.2)),
    ((2, 3, 4, 2), dict(weight=True, ignore_index=2, label_smoothing=0.1)), ((6,), dict(label_smoothing=0.3)),
    ((5, 4), dict(weight=True, reduction="none", label_smoothing=0.15)),
]


@pytest.mark.parametrize("shape, options", CE_CASES, ids=[f"{s}-{o}" for s, o in CE_CASES])
def test_cross_entropy(shape, options, rng):
    """Integer labels and probability targets; the class weights' gradient too (torch has none)."""
    options = dict(options)
    classes = shape[1] if len(shape) > 1 else shape[0]
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    x = nonzero(rng, shape) * 2
    y = rng.integers(0, classes, target_shape).astype(np.int64)
    if "ignore_index" in options:
        y.reshape(-1)[0] = options["ignore_index"]
        y.reshape(-1)[1] = (options["ignore_index"] + 1) % classes
    p = positive(rng, shape)
    p = p / p.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)
    if options.pop("weight", False):
        wt = positive(rng, (classes,))
        fd_check(lambda x, y, w: O.cross_entropy(x, y, w, **options), [x, y, wt], rng)
        fd_check(lambda x, t, w: O.cross_entropy(x, t, weight=w, **{k: v for k, v in options.items()
                                                                  if k != "ignore_index"}), [x, p, wt], rng)
    else:
        fd_check(lambda x, y: O.cross_entropy(x, y, **options), [x, y], rng)
        fd_check(lambda x, t: O.cross_entropy(x, t, **{k: v for k, v in options.items() if k != "ignore_index"}),
                 [x, p], rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(reduction, rng):
    x, t, w = nonzero(rng, (4, 5)), nonzero(rng, (4, 5)), positive(rng, (4, 5))
    fd_check(lambda x, t: O.mse_loss(x, t, reduction=reduction), [x, t], rng)
    fd_check(lambda x, t, w: O.mse_loss(x, t, reduction=reduction, weight=w), [x, t, w], rng)
    p, y = positive(rng, (4, 5), 0.05, 0.95), positive(rng, (4, 5), 0.0, 1.0)
    fd_check(lambda p, y: O.binary_cross_entropy(p, y, reduction=reduction), [p, y], rng)
    fd_check(lambda p, y, w: O.binary_cross_entropy(p, y, w, reduction=reduction), [p, y, w], rng)


# -- second order: the vjps of the vjps ------------------------------------------------------------

SECOND_ORDER = [
    ("conv2d", lambda x, w: O.sum(O.tanh(O.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2)))),
     [(2, 2, 7, 6), (3, 2, 3, 2)], nonzero),
    ("max_pool2d", lambda x, w: O.sum(O.max_pool2d(x * w, 3, 2, 1) ** 2), [(1, 2, 7, 6), (2, 1, 1)], distinct),
    ("avg_pool2d", lambda x, w: O.sum(O.avg_pool2d(x * w, 3, 2, 1, count_include_pad=False) ** 3), [(1, 2, 7, 6), (2, 1, 1)],
     nonzero),
    ("softmax-cross_entropy", lambda x, w: O.cross_entropy(x @ w, np.array([0, 2, 1, 2]), label_smoothing=0.1),
     [(4, 5), (5, 3)], nonzero),
    ("layer_norm", lambda x, w: O.sum(O.layer_norm(x, (5,), w) ** 3), [(4, 5), (5,)], nonzero),
    ("batch_norm", lambda x, w: O.sum(O.sigmoid(O.batch_norm(x, None, None, w, None, training=True))),
     [(4, 3, 2, 2), (3,)], nonzero),
    ("matmul-pow-div", lambda x, w: O.sum(O.exp(x @ w) / (1.0 + (x @ w) ** 2)), [(3, 4), (4, 2)], lambda r, s: nonzero(r, s, 0.1, 0.7)),
    ("pad-slice-cat", lambda x, w: O.sum(O.cat([x[:, 1:], x[:, ::2] * w[:3]], 1) ** 3), [(3, 5), (5,)], nonzero),
    ("var-std", lambda x, w: O.sum(O.std(x * w, 0) * O.var(x, 1).sum()), [(4, 5), (5,)], nonzero),
]


@pytest.mark.parametrize("f, shapes, make", [pytest.param(f, s, m, id=n) for n, f, s, m in SECOND_ORDER])
def test_hessian_vector_products(f, shapes, make, rng):
    """hvp(x, w) = <grad f(x, w), (u, v)> differentiated again, against finite differences."""
    x, w = (make(rng, s) for s in shapes)
    u, v = nonzero(rng, shapes[0]), nonzero(rng, shapes[1])

    def hvp(x, w, u, v):
        gx, gw = C.grad(f, argnums=(0, 1))(x, w)
        return O.sum(gx * u) + O.sum(gw * v)

    fd_check(hvp, [x, w, u, v], rng, wrt=(0, 1))
