"""value_and_grad(..., has_aux=True): the first output is differentiated, the others (a
model's logits, its new running statistics) come back as they are — the shape of a training
step, where the loss is differentiated and the predictions are reported."""
import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from tests.helpers import nonzero, rel_error


def model(w, x):
    h = x @ w
    return O.mean(O.tanh(h)), h, O.sum(h, 0)


def torch_model(w, x):
    w = torch.tensor(w, requires_grad=True)
    h = torch.tensor(x) @ w
    loss = torch.tanh(h).mean()
    loss.backward()
    return loss.item(), h.detach().numpy(), h.sum(0).detach().numpy(), w.grad.numpy()


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_aux_outputs_come_back_beside_the_value_and_only_the_value_is_differentiated(backend, rng):
    w, x = nonzero(rng, (3, 2)), nonzero(rng, (5, 3))
    dtype = np.float64 if backend == "reference" else np.float32
    (value, (h, column_sums)), (grad,) = C.value_and_grad(model, argnums=(0,), backend=backend, has_aux=True)(
        w.astype(dtype), x.astype(dtype))
    want_value, want_h, want_sums, want_grad = torch_model(w, x)
    tol = 1e-12 if backend == "reference" else 1e-5
    assert abs(value - want_value) < tol * max(1, abs(want_value))
    assert rel_error(h, want_h) < tol and rel_error(column_sums, want_sums) < tol and rel_error(grad, want_grad) < tol


def test_has_aux_inside_another_trace_inlines_the_joint_graph(rng):
    w, x = nonzero(rng, (3, 2)), nonzero(rng, (5, 3))

    def step(w, x):
        (value, (h, sums)), (grad,) = C.value_and_grad(model, argnums=(0,), has_aux=True)(w, x)
        return value + O.sum(grad) + O.sum(sums)
    got = C.jit(step, backend="reference")(w, x)
    want_value, _, want_sums, want_grad = torch_model(w, x)
    assert abs(got - (want_value + want_grad.sum() + want_sums.sum())) < 1e-12


def test_without_has_aux_two_outputs_are_still_an_error():
    with pytest.raises(C.GradientError, match="one output"):
        C.value_and_grad(model, backend="reference")(np.ones((3, 2)) * 0.5, np.ones((5, 3)) * 0.25)
