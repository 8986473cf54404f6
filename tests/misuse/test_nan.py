"""NaN and ±inf go through every op as they go through torch's, on both backends.

A NaN in the data must not vanish on the way to the loss: relu, maximum, clamp, amax,
argmax, max pooling ... all propagate it in torch, and a kernel that drops it (Triton's
tl.max and tl.maximum skip NaN by default) gives a finite loss for garbage input. Each op
is run on inputs holding a NaN, a +inf and a -inf at random places and compared with torch:
in float64 on the reference backend (with the gradient, where torch's is defined), and in
float32 through the Triton kernels.
"""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import compiler as C
import ops as O
from ops import layers as L
from runtime.training.data import split
from runtime.training.loop import NonFiniteLossError, fit
from tests.helpers import nonzero

NAN, INF = float("nan"), float("inf")


def with_specials(rng, shape, dtype=np.float64):
    """Random values bounded away from zero, with a NaN, a +inf and a -inf at random places."""
    x = nonzero(rng, shape)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 3, replace=False)] = [NAN, INF, -INF]
    return x.astype(dtype)


def _ops():
    """(id, ours, theirs, shapes of the inputs, compare gradients)."""
    image = (2, 2, 5, 5)
    table = [
        ("relu", O.relu, F.relu, [(4, 6)], True),
        ("leaky_relu", lambda x: O.leaky_relu(x, 0.1), lambda x: F.leaky_relu(x, 0.1), [(4, 6)], True),
        ("clamp", lambda x: O.clamp(x, -0.5, 0.5), lambda x: torch.clamp(x, -0.5, 0.5), [(4, 6)], False),
        ("clamp-min", lambda x: O.clamp(x, min=-0.5), lambda x: torch.clamp(x, min=-0.5), [(4, 6)], False),
        ("maximum", O.maximum, torch.maximum, [(4, 6), (4, 6)], True),
        ("minimum", O.minimum, torch.minimum, [(4, 6), (4, 6)], True),
        ("maximum-scalar", lambda x: O.maximum(x, 0.5), lambda x: torch.maximum(x, torch.tensor(0.5, dtype=x.dtype)),
         [(4, 6)], True),
        ("add", O.add, torch.add, [(4, 6), (4, 6)], True),
        ("mul", O.mul, torch.mul, [(4, 6), (4, 6)], True),
        ("div", O.div, torch.div, [(4, 6), (4, 6)], True),
        ("pow-2", lambda x: O.pow(x, 2.0), lambda x: torch.pow(x, 2.0), [(4, 6)], True),
        ("exp", O.exp, torch.exp, [(4, 6)], True),
        ("log", lambda x: O.log(O.abs(x)), lambda x: torch.log(torch.abs(x)), [(4, 6)], True),
        ("sqrt", lambda x: O.sqrt(O.abs(x)), lambda x: torch.sqrt(torch.abs(x)), [(4, 6)], True),
        ("abs", O.abs, torch.abs, [(4, 6)], True),
        ("sign", lambda x: O.sign(x) if hasattr(O, "sign") else O.primitives.sign(x), torch.sign, [(4, 6)], False),
        ("tanh", O.tanh, torch.tanh, [(4, 6)], True),
        ("sigmoid", O.sigmoid, torch.sigmoid, [(4, 6)], True),
        ("amax", lambda x: O.amax(x, 1), lambda x: torch.amax(x, 1), [(4, 6)], True),
        ("amax-all", O.amax, torch.amax, [(4, 6)], True),
        ("amin", lambda x: O.amin(x, 1), lambda x: torch.amin(x, 1), [(4, 6)], True),
        ("argmax", lambda x: O.argmax(x, 1), lambda x: torch.argmax(x, 1), [(4, 6)], False),
        ("argmax-all", O.argmax, torch.argmax, [(4, 6)], False),
        ("sum", lambda x: O.sum(x, 1), lambda x: torch.sum(x, 1), [(4, 6)], True),
        ("mean", lambda x: O.mean(x, 1), lambda x: torch.mean(x, 1), [(4, 6)], True),
        # var's gradient: torch's formula drops the mean's part (exactly 0 in exact arithmetic);
        # the chain rule keeps it (second derivatives need it), so an inf spreads NaN along its row
        ("var", lambda x: O.var(x, 1), lambda x: torch.var(x, 1), [(4, 6)], False),
        ("softmax", lambda x: O.softmax(x, 1), lambda x: torch.softmax(x, 1), [(4, 6)], True),
        ("log_softmax", lambda x: O.log_softmax(x, 1), lambda x: torch.log_softmax(x, 1), [(4, 6)], True),
        ("logsumexp", lambda x: O.logsumexp(x, 1), lambda x: torch.logsumexp(x, 1), [(4, 6)], True),
        ("matmul", O.matmul, torch.matmul, [(4, 6), (6, 3)], True),
        ("max_pool2d", lambda x: O.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2), [image], True),
        ("max_pool2d-padded", lambda x: O.max_pool2d(x, 3, 1, 1), lambda x: F.max_pool2d(x, 3, 1, 1), [image], True),
        ("avg_pool2d", lambda x: O.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2), [image], True),
        ("mse_loss", O.mse_loss, F.mse_loss, [(4, 6), (4, 6)], True),
        ("bce_with_logits", O.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits,
         [(4, 6), (4, 6)], False),
    ]
    # torch.nn.functional's other activations: the value (their gradient at NaN follows the
    # formula of each, NaN or not, where torch's follows its own mask)
    table += [(name, getattr(O, name), getattr(F, name), [(4, 6)], False)
              for name in ("hardtanh", "relu6", "elu", "selu", "celu", "silu", "mish", "gelu", "softplus",
                           "logsigmoid", "hardsigmoid")]
    return [pytest.param(ours, theirs, shapes, grad, id=name) for name, ours, theirs, shapes, grad in table]


def assert_same(got, want, rtol):
    """Equal values, NaN where torch has NaN and the same infinities."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != torch's {want.shape}"
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want)
        return
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg="NaN where torch has none, or none "
                                                                         "where torch has one")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True)


@pytest.mark.parametrize("ours, theirs, shapes, grad", _ops())
def test_nan_and_inf_as_torch_on_the_reference_backend(ours, theirs, shapes, grad, rng):
    inputs = [with_specials(rng, s) for s in shapes]
    tensors = [torch.from_numpy(a.copy()).requires_grad_(grad) for a in inputs]
    want = theirs(*tensors)
    assert_same(C.jit(ours, backend="reference")(*inputs), want.detach().numpy(), rtol=1e-7)
    if not grad:
        return
    r = np.asarray(nonzero(rng, tuple(want.shape)))
    (want * torch.from_numpy(r)).sum().backward()
    _, grads = C.value_and_grad(lambda *a: O.sum(ours(*a[:-1]) * a[-1]), argnums=tuple(range(len(inputs))),
                                backend="reference")(*inputs, r)
    for g, t in zip(grads, tensors):
        assert_same(g, t.grad.numpy(), rtol=1e-7)


@pytest.mark.parametrize("ours, theirs, shapes, grad", _ops())
def test_nan_and_inf_as_torch_through_the_triton_kernels(ours, theirs, shapes, grad, rng):
    inputs = [with_specials(rng, s, np.float32) for s in shapes]
    # torch in float64 on the same values: its float32 CPU kernels have quirks of their own (gelu(inf) is NaN)
    want = theirs(*(torch.from_numpy(a.astype(np.float64)) for a in inputs))
    assert_same(C.jit(ours, backend="interpret")(*inputs), want.numpy(), rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_one_nan_in_the_data_makes_the_loss_nan_through_relu(backend, rng):
    """The issue's report: one NaN in x, and mean(relu(x @ w)) came out a number."""
    x, w = nonzero(rng, (8, 5)).astype(np.float32), nonzero(rng, (5, 4)).astype(np.float32)
    x[rng.integers(8), rng.integers(5)] = NAN
    loss = C.jit(lambda x, w: O.mean(O.relu(x @ w)), backend=backend)(x, w)
    assert np.isnan(loss), f"{backend}: a NaN in the data gave the finite loss {loss}"


@pytest.mark.parametrize("backend", ["reference", "interpret"])
@pytest.mark.parametrize("cols", [7, 5000])      # one block per row, and the looped form's running max
def test_argmax_points_at_the_first_nan_and_amax_is_nan(backend, cols, rng):
    x = nonzero(rng, (3, cols)).astype(np.float32)
    first, second = sorted(rng.choice(cols, 2, replace=False))
    x[1, first] = x[1, second] = NAN
    x[2, rng.integers(cols)] = INF
    got_index = C.jit(lambda x: O.argmax(x, 1), backend=backend)(x)
    got_max = C.jit(lambda x: O.amax(x, 1), backend=backend)(x)
    np.testing.assert_array_equal(got_index, torch.argmax(torch.from_numpy(x), 1).numpy())
    assert got_index[1] == first
    assert_same(got_max, torch.amax(torch.from_numpy(x), 1).numpy(), rtol=0)


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_softmax_of_long_rows_with_a_nan_is_nan_on_that_row_only(backend, rng):
    """The row kernels' looped form (rows longer than one block) keeps the NaN in its running max."""
    x = nonzero(rng, (3, 5000)).astype(np.float32)
    x[1, rng.integers(5000)] = NAN
    got = C.jit(lambda x: O.softmax(x, 1), backend=backend)(x)
    assert_same(got, torch.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_dropout_keeps_a_nan_where_it_drops_the_element(backend, rng):
    """torch's dropout multiplies by the mask: a dropped NaN is NaN, not a silent 0."""
    x = np.full((64,), NAN, np.float32)
    got = C.jit(lambda x: O.dropout(x, 0.5, training=True, seed=int(rng.integers(1000))), backend=backend)(x)
    assert np.isnan(got).all()
    assert F.dropout(torch.from_numpy(x), 0.5, training=True).isnan().all()


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_fit_stops_at_the_first_step_when_every_image_holds_a_nan(backend, rng, tmp_path):
    """conv -> relu -> max pool -> dense: the NaN must reach the loss (relu and the pool used to
    drop it, and the model "trained" on garbage), so the loop's finite-loss guard stops the run
    at epoch 1, step 1, naming the batch, and leaves no checkpoint behind."""
    x = nonzero(rng, (48, 1, 6, 6)).astype(np.float32)
    for image in x:
        image[0, rng.integers(6), rng.integers(6)] = NAN
    y = rng.integers(0, 3, 48)
    model = L.Sequential(L.Conv2d(1, 2, 3), L.ReLU(), L.MaxPool2d(2), L.Flatten(), L.Dense(8, 3),
                         input_shape=(1, 6, 6)).init(0)
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, split(x, y, stratify=False), epochs=2, batch_size=8, backend=backend, out=str(tmp_path),
            log=lambda line: None, progress=False)
    text = str(info.value)
    assert "nan at epoch 1, step 1" in text and "batch 1: examples 0..7" in text, text
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_pow_of_one_and_minus_one_to_nan_or_inf_is_one_as_torch(backend):
    """1 ** y is 1 for any y, and (-1) ** ±inf is 1; x ** 0 is 1 for a NaN x too (the cases
    themselves are the point, so no random draw)."""
    x = np.array([1, 1, 1, -1, -1, NAN, INF, -INF, -1, 0], np.float32)
    y = np.array([NAN, INF, -INF, INF, -INF, 0, 0, 0, NAN, NAN], np.float32)
    want = torch.pow(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    assert_same(C.jit(O.pow, backend=backend)(x, y), want, rtol=0)
