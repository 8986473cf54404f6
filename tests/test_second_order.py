"""Derivatives of derivatives: the backward graph is made of ordinary primitives, so it
can be differentiated again.

Calling `C.grad(f)` on traced tensors inside another traced function inlines f's joint
graph into the outer trace; the outer `C.grad` then differentiates through it. We check
Hessian-vector products of small MLP losses against torch's double backward
(`torch.autograd.grad(..., create_graph=True)`), a full Hessian built row by row against
`torch.autograd.functional.hessian`, and third derivatives against their formulas.
All in float64 on the reference backend.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from tests.helpers import nonzero, rel_error

TOLERANCE = 1e-9
N, D, H, K = 5, 3, 4, 3          # batch, inputs, hidden units, classes / outputs

ACTIVATIONS = {"tanh": (O.tanh, torch.tanh), "relu": (O.relu, torch.relu)}


def _mlp_loss(activation, loss):
    """A two-layer MLP's loss, in chainrule and in torch."""
    act_o, act_t = ACTIVATIONS[activation]

    def chainrule_loss(w1, b1, w2, b2, x, y):
        out = O.linear(act_o(O.linear(x, w1, b1)), w2, b2)
        return O.cross_entropy(out, y) if loss == "cross_entropy" else O.mse_loss(out, y)

    def torch_loss(w1, b1, w2, b2, x, y):
        out = torch.nn.functional.linear(act_t(torch.nn.functional.linear(x, w1, b1)), w2, b2)
        f = torch.nn.functional.cross_entropy if loss == "cross_entropy" else torch.nn.functional.mse_loss
        return f(out, y)

    return chainrule_loss, torch_loss


def _mlp_data(rng, loss):
    params = [nonzero(rng, s, 0.2, 1.0) for s in ((H, D), (H,), (K, H), (K,))]
    x = nonzero(rng, (N, D), 0.2, 1.5)
    y = rng.integers(0, K, N).astype(np.int64) if loss == "cross_entropy" else nonzero(rng, (N, K))
    vectors = [nonzero(rng, p.shape) for p in params]
    return params, x, y, vectors


def _torch_hvp(torch_loss, params, x, y, vectors):
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    grads = torch.autograd.grad(torch_loss(*ps, torch.from_numpy(x), torch.from_numpy(y)), ps, create_graph=True)
    dot = sum((g * torch.from_numpy(v)).sum() for g, v in zip(grads, vectors))
    return dot.detach().numpy(), [h.numpy() for h in torch.autograd.grad(dot, ps)]


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse_loss"])
def test_mlp_hessian_vector_product_matches_torch_double_backward(rng, activation, loss):
    chainrule_loss, torch_loss = _mlp_loss(activation, loss)
    params, x, y, vectors = _mlp_data(rng, loss)

    def grad_dot_v(w1, b1, w2, b2, x, y, v1, vb1, v2, vb2):
        """⟨∇loss, v⟩, with ∇loss from a C.grad nested inside this trace."""
        grads = C.grad(chainrule_loss, argnums=(0, 1, 2, 3))(w1, b1, w2, b2, x, y)
        assert all(isinstance(g, O.Tensor) for g in grads)       # inlined, not run
        dot = O.sum(grads[0] * v1)
        for g, v in zip(grads[1:], (vb1, v2, vb2)):
            dot = dot + O.sum(g * v)
        return dot

    hvp = C.value_and_grad(grad_dot_v, argnums=(0, 1, 2, 3), backend="reference")
    value, hv = hvp(*params, x, y, *vectors)
    want_value, want_hv = _torch_hvp(torch_loss, params, x, y, vectors)
    assert rel_error(value, want_value) < TOLERANCE
    for name, got, want in zip(("w1", "b1", "w2", "b2"), hv, want_hv):
        assert got.shape == want.shape
        assert rel_error(got, want) < TOLERANCE, f"H·v for {name} differs from torch (rel {rel_error(got, want):.2e})"

    # the same product along another direction reuses the compiled program
    vectors2 = [nonzero(rng, v.shape) for v in vectors]
    _, hv2 = hvp(*params, x, y, *vectors2)
    _, want_hv2 = _torch_hvp(torch_loss, params, x, y, vectors2)
    assert len(hvp.cache) == 1
    for got, want in zip(hv2, want_hv2):
        assert rel_error(got, want) < TOLERANCE


def test_nested_grad_graph_contains_a_second_backward(rng):
    """The outer joint graph differentiates the inner one: it has more backward nodes than
    the forward-and-backward it was built from."""
    chainrule_loss, _ = _mlp_loss("tanh", "mse_loss")

    def grad_norm(w1, b1, w2, b2, x, y):
        g = C.grad(chainrule_loss, argnums=0)(w1, b1, w2, b2, x, y)
        return O.sum(g * g)

    specs = [O.spec(s, "float64") for s in ((H, D), (H,), (K, H), (K,), (N, D), (N, K))]
    inner = C.grad_graph(C.trace(chainrule_loss, *specs), (0,))
    outer = C.grad_graph(C.trace(grad_norm, *specs), (0,))
    assert outer.num_ops > inner.num_ops
    assert sum(n.role == "backward" for n in outer.nodes) > sum(n.role == "backward" for n in inner.nodes)
    # the inner backward's matmuls (dW1 = gᵀx, ...) are differentiated too: more matmuls outside
    assert outer.op_counts()["matmul"] > inner.op_counts()["matmul"]

    params, x, y, _ = _mlp_data(rng, "mse_loss")
    got = C.grad(grad_norm, argnums=0, backend="reference")(*params, x, y)
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    (g,) = torch.autograd.grad(_mlp_loss("tanh", "mse_loss")[1](*ps, torch.from_numpy(x), torch.from_numpy(y)),
                               ps[:1], create_graph=True)
    (want,) = torch.autograd.grad((g * g).sum(), ps[:1])
    assert rel_error(got, want.numpy()) < TOLERANCE


# -- a full Hessian, one row per unit vector -------------------------------------------------------

A = np.array([[0.7, -1.2, 0.4, 1.1], [0.3, 0.9, -0.8, 0.5], [-1.4, 0.6, 1.3, -0.2]])
B = np.array([[1.0, -0.5, 2.0, 0.3], [-1.5, 0.8, 0.6, -0.9]])


def tiny(x):
    """A function of a [2, 3] tensor whose Hessian is dense: softmax couples a row,
    the sum of squares couples everything."""
    return O.sum(O.log_softmax(x @ A, dim=1) * B) + O.sum(O.tanh(x) ** 3) + O.sum(x) ** 2 * 0.25


def tiny_torch(x):
    return (torch.log_softmax(x @ torch.from_numpy(A), dim=1) * torch.from_numpy(B)).sum() + \
        (torch.tanh(x) ** 3).sum() + x.sum() ** 2 * 0.25


def test_full_hessian_from_unit_vector_products_matches_torch(rng):
    x = nonzero(rng, (2, 3), 0.2, 1.5)

    def directional(x, v):
        return O.sum(C.grad(tiny)(x) * v)

    hvp = C.grad(directional, argnums=0, backend="reference")
    rows = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = 1.0
        rows.append(hvp(x, e.reshape(x.shape)).reshape(-1))
    hessian = np.stack(rows)
    assert len(hvp.cache) == 1
    want = torch.autograd.functional.hessian(tiny_torch, torch.from_numpy(x)).numpy().reshape(x.size, x.size)
    assert rel_error(hessian, want) < TOLERANCE
    assert rel_error(hessian, hessian.T) < 1e-12          # symmetric, as a Hessian is
    # and the gradient it came from
    got = C.grad(tiny, backend="reference")(x)
    xt = torch.tensor(x, requires_grad=True)
    (want_grad,) = torch.autograd.grad(tiny_torch(xt), xt)
    assert rel_error(got, want_grad.numpy()) < TOLERANCE


# -- third derivatives ---------------------------------------------------------------------------------

def cube_exp(x):
    return x ** 3 * O.exp(x)


def cube_exp_derivatives(x):
    e = np.exp(x)
    return [(x**3 + 3 * x**2) * e, (x**3 + 6 * x**2 + 6 * x) * e, (x**3 + 9 * x**2 + 18 * x + 6) * e]


def tanh_(x):
    return O.tanh(x)


def tanh_derivatives(x):
    t = np.tanh(x)
    return [1 - t**2, -2 * t * (1 - t**2), -2 * (1 - t**2) * (1 - 3 * t**2)]


def cube_tanh(x):
    return x ** 3 * O.tanh(x)


def cube_tanh_derivatives(x):
    t = np.tanh(x)
    s = 1 - t**2                                  # tanh'
    s1 = -2 * t * s                               # tanh''
    s2 = -2 * s * (1 - 3 * t**2)                  # tanh'''
    return [3 * x**2 * t + x**3 * s,
            6 * x * t + 6 * x**2 * s + x**3 * s1,
            6 * t + 18 * x * s + 9 * x**2 * s1 + x**3 * s2]


@pytest.mark.parametrize("f, derivatives", [(cube_exp, cube_exp_derivatives), (tanh_, tanh_derivatives),
                                            (cube_tanh, cube_tanh_derivatives)], ids=["x3_exp", "tanh", "x3_tanh"])
def test_third_derivative_of_a_scalar_function(rng, f, derivatives):
    d1 = C.grad(f, backend="reference")
    d2 = C.grad(C.grad(f), backend="reference")
    d3 = C.grad(C.grad(C.grad(f)), backend="reference")
    for x in nonzero(rng, (4,), 0.2, 1.8):
        want = derivatives(x)
        for k, (d, w) in enumerate(zip((d1, d2, d3), want), start=1):
            got = d(np.asarray(x))
            assert np.shape(got) == ()
            assert abs(got - w) <= 1e-10 * max(1.0, abs(w)), f"derivative {k} at {x}: {got} vs {w}"
    assert len(d3.cache) == 1


def test_third_derivative_elementwise_on_a_vector(rng):
    """Each level sums before differentiating again: for an elementwise f, the result is
    f''' at every element."""
    d3 = C.grad(lambda x: O.sum(C.grad(lambda x: O.sum(C.grad(lambda x: O.sum(cube_exp(x)))(x)))(x)),
                backend="reference")
    x = nonzero(rng, (3, 2), 0.2, 1.8)
    got = d3(x)
    assert got.shape == x.shape
    assert rel_error(got, cube_exp_derivatives(x)[2]) < 1e-10
