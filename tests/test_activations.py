"""torch.nn.functional's activations (gelu, softplus, elu, selu, celu, silu, mish, logsigmoid,
hardtanh, relu6, hardsigmoid, hardswish) and the erf primitive under them, against torch:
the value and the gradient in float64 on the reference backend and in float32 through the
generated Triton kernels; central finite differences in float64; torch's values and
gradients where the functions saturate or have a kink; their layers against torch.nn."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import compiler as C
import ops as O
from ops import layers as L
from ops import primitives as P
from ops.errors import ArgumentError
from tests.helpers import nonzero, rel_error
from tests.test_finite_differences import fd_check
from tests.test_ops_vs_torch import check as check_f64
from tests.test_triton_ops import check as check_f32


def wide(rng, shape, dtype=np.float64):
    """Values on both sides of every kink and bound (±3 for the hard ones, 6 for relu6)."""
    return nonzero(rng, shape, 0.05, 7.0, dtype)


# (id, ours, theirs)
ACTIVATIONS = [
    ("erf", O.erf, torch.erf),
    ("gelu", O.gelu, F.gelu),
    ("gelu-tanh", lambda x: O.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    ("softplus", O.softplus, F.softplus),
    ("softplus-beta", lambda x: O.softplus(x, beta=2.5, threshold=4.0),
     lambda x: F.softplus(x, beta=2.5, threshold=4.0)),
    ("softplus-negative-beta", lambda x: O.softplus(x, -0.5), lambda x: F.softplus(x, -0.5)),
    ("elu", O.elu, F.elu),
    ("elu-alpha", lambda x: O.elu(x, alpha=0.3), lambda x: F.elu(x, alpha=0.3)),
    ("selu", O.selu, F.selu),
    # torch's celu gradient uses 1/alpha rounded to float32: an alpha whose inverse is exact
    ("celu", lambda x: O.celu(x, 0.5), lambda x: F.celu(x, 0.5)),
    ("silu", O.silu, F.silu),
    ("mish", O.mish, F.mish),
    ("logsigmoid", O.logsigmoid, F.logsigmoid),
    ("hardtanh", O.hardtanh, F.hardtanh),
    ("hardtanh-bounds", lambda x: O.hardtanh(x, -2.0, 0.5), lambda x: F.hardtanh(x, -2.0, 0.5)),
    ("relu6", O.relu6, F.relu6),
    ("hardsigmoid", O.hardsigmoid, F.hardsigmoid),
    ("hardswish", O.hardswish, F.hardswish),
]
CASES = [pytest.param(ours, theirs, id=name) for name, ours, theirs in ACTIVATIONS]


@pytest.mark.parametrize("ours, theirs", CASES)
@pytest.mark.parametrize("shape", [(), (3, 1, 5)])
def test_value_and_gradient_float64_reference(ours, theirs, shape, rng):
    check_f64(ours, theirs, [wide(rng, shape)], rng)


@pytest.mark.parametrize("ours, theirs", CASES)
def test_value_and_gradient_float32_generated_kernels(ours, theirs, rng):
    check_f32(ours, theirs, [wide(rng, (4, 5), np.float32)], rng)


@pytest.mark.parametrize("ours, theirs", CASES)
def test_gradient_by_finite_differences(ours, theirs, rng):
    x = wide(rng, (2, 3, 4))
    for kink in (0.0, 3.0, -3.0, 6.0, 0.5, -2.0, -1.0, 1.0, 4.0 / 2.5):     # stay clear of the kinks
        x = np.where(np.abs(x - kink) < 1e-3, x + 1e-2, x)
    fd_check(ours, [x], rng)


def test_erf_primitive_against_torch(rng):
    check_f64(P.erf, torch.erf, [nonzero(rng, (7,), 0.01, 4.0)], rng)


# -- where they saturate, and at their kinks: torch's values and gradients, nothing NaN --------------

EXTREMES = np.array([-800.0, -40.0, -20.5, -1.5, 0.5, 19.5, 20.5, 40.0, 800.0])
KINKS = np.array([-6.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 6.0])


def _weights(x):
    """Weights for sum(f(x) · w), so that an odd f's terms do not cancel to roundoff."""
    return (1.0 + np.arange(x.size) / 10.0).astype(x.dtype)


def _value_and_gradient(fn, x, backend):
    return C.value_and_grad(lambda x, w: O.sum(fn(x) * w), backend=backend)(x, _weights(x))


def _torch_value_and_gradient(fn, x):
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = (fn(t) * torch.from_numpy(_weights(x))).sum()
    out.backward()
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize("ours, theirs", CASES)
@pytest.mark.parametrize("points", [EXTREMES, KINKS], ids=["extremes", "kinks"])
@pytest.mark.parametrize("backend, dtype", [("reference", np.float64), ("interpret", np.float32)])
def test_extremes_and_kinks_match_torch(ours, theirs, points, backend, dtype):
    x = points.astype(dtype)
    value, grad = _value_and_gradient(ours, x, backend)
    want_value, want_grad = _torch_value_and_gradient(theirs, x)
    assert np.all(np.isfinite(grad)) and np.isfinite(value)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert rel_error(value, want_value) < tol
    # torch's float64 backward of hardsigmoid multiplies by 1/6 rounded to float32
    grad_tol = 1e-7 if dtype == np.float64 else tol
    np.testing.assert_allclose(grad, want_grad, rtol=grad_tol, atol=tol)


# Where torch's value at ±inf is an artefact of its formula, ours is the limit: hardswish(-inf)
# (torch: -inf · 0 = NaN) and, in float32 only, gelu(inf) (torch's vectorized kernel: NaN).
OUR_LIMITS = {("hardswish", -np.inf): 0.0, ("gelu", np.inf, np.float32): np.inf}


@pytest.mark.parametrize("name, ours, theirs", [pytest.param(*a, id=a[0]) for a in ACTIVATIONS])
@pytest.mark.parametrize("backend, dtype", [("reference", np.float64), ("interpret", np.float32)])
def test_infinities_and_nan_as_torch(name, ours, theirs, backend, dtype):
    x = np.array([-np.inf, np.inf, np.nan, -0.0, 0.0], dtype)
    got = C.jit(ours, backend=backend)(x)
    want = theirs(torch.from_numpy(x)).numpy()
    for i, v in enumerate(x[:2]):
        want[i] = OUR_LIMITS.get((name, v), OUR_LIMITS.get((name, v, dtype), want[i]))
    np.testing.assert_array_equal(got, want)


# -- arguments torch rejects ----------------------------------------------------------------------

@pytest.mark.parametrize("call, words", [
    (lambda x: O.gelu(x, approximate="fast"), ["gelu", "approximate", "'fast'"]),
    (lambda x: O.softplus(x, beta=0), ["softplus", "beta"]),
    (lambda x: O.celu(x, alpha=0.0), ["celu", "alpha"]),
    (lambda x: O.hardtanh(x, 1.0, -1.0), ["hardtanh", "max_val 1.0", "min_val -1.0"]),
], ids=["gelu-approximate", "softplus-beta", "celu-alpha", "hardtanh-bounds"])
def test_bad_arguments_name_the_argument_and_the_line(call, words, rng):
    with pytest.raises(ArgumentError) as info:
        C.jit(call, backend="reference")(nonzero(rng, (3,)))
    message = str(info.value)
    assert all(w in message for w in words), message
    assert "test_activations.py:" in message


# -- the layers -----------------------------------------------------------------------------------

LAYERS = [
    (lambda: L.GELU(), nn.GELU), (lambda: L.GELU("tanh"), lambda: nn.GELU("tanh")),
    (lambda: L.Softplus(2.0, 5.0), lambda: nn.Softplus(2.0, 5.0)), (lambda: L.ELU(0.5), lambda: nn.ELU(0.5)),
    (lambda: L.CELU(0.5), lambda: nn.CELU(0.5)), (lambda: L.Hardtanh(-2.0, 3.0), lambda: nn.Hardtanh(-2.0, 3.0)),
    (L.SELU, nn.SELU), (L.SiLU, nn.SiLU), (L.Mish, nn.Mish), (L.ReLU6, nn.ReLU6), (L.Hardsigmoid, nn.Hardsigmoid),
    (L.Hardswish, nn.Hardswish), (L.LogSigmoid, nn.LogSigmoid),
]


@pytest.mark.parametrize("make, make_torch", LAYERS, ids=[type(m()).__name__ + str(i) for i, (m, _) in
                                                             enumerate(LAYERS)])
def test_activation_layers_match_torch_nn(make, make_torch, rng):
    model = L.Sequential(L.Dense(5, 6), make())
    model.build((5,), rng)
    params = {k: nonzero(rng, v.shape) for k, v in model.params.items()}
    x = wide(rng, (4, 5))
    y, _ = model.forward(params, {}, x, training=False)
    dense = nn.Linear(5, 6).double()
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(params[next(k for k in params if k.endswith("weight"))]))
        dense.bias.copy_(torch.from_numpy(params[next(k for k in params if k.endswith("bias"))]))
        want = make_torch()(dense(torch.from_numpy(x))).numpy()
    assert rel_error(y, want) < 1e-12
    assert make().kind in repr(model).lower() or type(make()).__name__ in repr(model)
