"""Every op of DESIGN.md's list through generated Triton kernels (the interpreter here, the
GPU where there is one): the value and the gradient of sum(out * r) equal torch's in
float32, ‖out − ref‖/‖ref‖ < 1e-4, with TF32 off. One or two shapes per op: the kernel
families themselves are tested over many shapes in tests/test_triton_*.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import compiler as C
import ops as O
from tests.helpers import nonzero, positive, rel_error

TOL = 1e-4
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def check(ours, theirs, inputs, rng, wrt=None):
    inputs = [np.asarray(a) for a in inputs]
    if wrt is None:
        wrt = tuple(i for i, a in enumerate(inputs) if a.dtype.kind == "f")
    targs = [torch.from_numpy(a.copy()).requires_grad_(i in wrt) for i, a in enumerate(inputs)]
    want = theirs(*targs)
    value = C.jit(ours, backend="interpret")(*inputs)
    assert value.shape == tuple(want.shape) and value.dtype.name == str(want.dtype).removeprefix("torch.")
    if value.dtype.kind != "f":
        np.testing.assert_array_equal(value, want.numpy())
        return
    assert rel_error(value, want.detach().numpy()) < TOL
    r = np.asarray(nonzero(rng, value.shape, dtype=np.float32))
    loss, grads = C.value_and_grad(lambda *a: O.sum(ours(*a[:-1]) * a[-1]), argnums=wrt,
                                   backend="interpret")(*inputs, r)
    (want * torch.from_numpy(r)).sum().backward()
    for i, g in zip(wrt, grads):
        assert rel_error(g, targs[i].grad.numpy()) < TOL, f"gradient of input {i}"


def f32(rng, shape, make=nonzero):
    return make(rng, shape, dtype=np.float32)


def labels(rng, n, classes):
    return rng.integers(0, classes, n).astype(np.int64)


CASES = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (4,)]),
    "sub": (O.sub, torch.sub, [(2, 3), (2, 3)]),
    "mul": (O.mul, torch.mul, [(3, 1), (1, 5)]),
    "div": (O.div, torch.div, [(4, 3), (3,)]),
    "neg": (O.neg, torch.neg, [(5,)]),
    "pow": (lambda a, b: O.abs(a) ** b, lambda a, b: a.abs() ** b, [(3, 4), (3, 4)]),
    "exp": (O.exp, torch.exp, [(3, 5)]),
    "log": (lambda a: O.log(O.abs(a)), lambda a: torch.log(a.abs()), [(6,)]),
    "sqrt": (lambda a: O.sqrt(O.abs(a)), lambda a: torch.sqrt(a.abs()), [(2, 3)]),
    "abs": (O.abs, torch.abs, [(7,)]),
    "maximum": (O.maximum, torch.maximum, [(3, 4), (4,)]),
    "minimum": (O.minimum, torch.minimum, [(3, 4), (3, 1)]),
    "where": (lambda a, b: O.where(a > b, a, b), lambda a, b: torch.where(a > b, a, b), [(3, 4), (3, 4)]),
    "relu": (O.relu, F.relu, [(4, 5)]),
    "leaky_relu": (lambda a: O.leaky_relu(a, 0.2), lambda a: F.leaky_relu(a, 0.2), [(4, 5)]),
    "sigmoid": (O.sigmoid, torch.sigmoid, [(9,)]),
    "tanh": (O.tanh, torch.tanh, [(3, 3)]),
    "softmax": (lambda a: O.softmax(a, 1), lambda a: torch.softmax(a, 1), [(4, 7)]),
    "log_softmax": (lambda a: O.log_softmax(a, 0), lambda a: torch.log_softmax(a, 0), [(5, 3)]),
    "sum": (lambda a: O.sum(a, (0, 2)), lambda a: torch.sum(a, (0, 2)), [(2, 3, 4)]),
    "mean": (lambda a: O.mean(a, 1, keepdim=True), lambda a: torch.mean(a, 1, keepdim=True), [(3, 5)]),
    "amax": (lambda a: O.amax(a, 1), lambda a: torch.amax(a, 1), [(4, 6)]),
    "argmax": (lambda a: O.argmax(a, 1), lambda a: torch.argmax(a, 1), [(4, 6)]),
    "var": (lambda a: O.var(a, 0), lambda a: torch.var(a, 0), [(6, 3)]),
    "reshape": (lambda a: O.reshape(a.T, (2, 6)) * 2.0, lambda a: a.T.reshape(2, 6) * 2.0, [(3, 4)]),
    "flatten": (lambda a: O.flatten(a, 1) * 2.0, lambda a: torch.flatten(a, 1) * 2.0, [(2, 3, 2)]),
    "transpose": (lambda a: O.transpose(a, 0, 2) * 2.0, lambda a: a.transpose(0, 2) * 2.0, [(2, 3, 4)]),
    "permute": (lambda a: O.permute(a, (1, 2, 0)) + 1.0, lambda a: a.permute(1, 2, 0) + 1.0, [(2, 3, 4)]),
    "matmul": (O.matmul, torch.matmul, [(2, 3, 5), (5, 4)]),
    "linear": (O.linear, F.linear, [(6, 5), (3, 5), (3,)]),
    "conv2d": (lambda x, w, b: O.conv2d(x, w, b, stride=2, padding=1),
               lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(2, 3, 7, 6), (4, 3, 3, 3), (4,)]),
    "max_pool2d": (lambda x: O.max_pool2d(x, 3, 2, 1), lambda x: F.max_pool2d(x, 3, 2, 1), [(2, 3, 7, 6)]),
    "avg_pool2d": (lambda x: O.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2), [(2, 3, 6, 5)]),
    "adaptive_avg_pool2d": (lambda x: O.adaptive_avg_pool2d(x, 1), lambda x: F.adaptive_avg_pool2d(x, 1),
                            [(2, 3, 5, 4)]),
    "batch_norm": (lambda x, g, b: O.batch_norm(x, None, None, g, b, training=True),
                   lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), [(4, 3, 3, 3), (3,), (3,)]),
    "layer_norm": (lambda x, g, b: O.layer_norm(x, (5,), g, b), lambda x, g, b: F.layer_norm(x, (5,), g, b),
                   [(4, 5), (5,), (5,)]),
    "mse_loss": (O.mse_loss, F.mse_loss, [(4, 3), (4, 3)]),
    "binary_cross_entropy": (O.binary_cross_entropy, F.binary_cross_entropy, [(6,), (6,)]),
    "cat": (lambda a, b: O.cat([a, b], 1), lambda a, b: torch.cat([a, b], 1), [(3, 2), (3, 4)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_through_generated_kernels(name, rng):
    ours, theirs, shapes = CASES[name]
    inputs = [f32(rng, s) for s in shapes]
    if name == "binary_cross_entropy":          # probabilities and targets in (0, 1)
        inputs = [rng.uniform(0.05, 0.95, s).astype(np.float32) for s in shapes]
    check(ours, theirs, inputs, rng)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_through_generated_kernels(reduction, rng):
    logits, y = f32(rng, (6, 5)), labels(rng, 6, 5)
    check(lambda z, t: O.cross_entropy(z, t, reduction=reduction),
          lambda z, t: F.cross_entropy(z, t, reduction=reduction), [logits, y], rng, wrt=(0,))


def test_dropout_through_generated_kernels(rng):
    x = f32(rng, (8, 9), positive)
    seed = np.array(int(rng.integers(0, 2**31)))
    got = C.jit(lambda x, s: O.dropout(x, 0.25, seed=s), backend="interpret")(x, seed)
    want = C.jit(lambda x, s: O.dropout(x, 0.25, seed=s), backend="reference")(x, seed)
    np.testing.assert_array_equal(got == 0, want == 0)                # the same mask, from the same seed
    assert rel_error(got, want) < 1e-6
    keep = want != 0
    grad = C.grad(lambda x, s: O.sum(O.dropout(x, 0.25, seed=s)), backend="interpret")(x, seed)
    assert rel_error(grad, keep / 0.75) < 1e-6                         # the backward regenerates the mask


def test_cnn_training_loss_and_gradients_equal_torch(rng):
    """A whole LeNet-style training loss: conv, relu, pools, linear, cross-entropy."""
    x = f32(rng, (4, 1, 8, 8), positive)
    y = labels(rng, 4, 10)
    c1, c2 = f32(rng, (3, 1, 3, 3)) * 0.5, f32(rng, (5, 3, 3, 3)) * 0.3
    w, b = f32(rng, (10, 20)) * 0.3, f32(rng, (10,))

    def ours(c1, c2, w, b, x, y):
        h = O.max_pool2d(O.relu(O.conv2d(x, c1, padding=1)), 2)
        h = O.avg_pool2d(O.relu(O.conv2d(h, c2)), 1)
        return O.cross_entropy(O.linear(O.flatten(h, 1), w, b), y)

    def theirs(c1, c2, w, b, x, y):
        h = F.max_pool2d(F.relu(F.conv2d(x, c1, padding=1)), 2)
        h = F.avg_pool2d(F.relu(F.conv2d(h, c2)), 1)
        return F.cross_entropy(F.linear(torch.flatten(h, 1), w, b), y)

    check(ours, theirs, [c1, c2, w, b, x, y], rng, wrt=(0, 1, 2, 3))
