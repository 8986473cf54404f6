"""Gradients at the points where a composite's pieces meet (z = 0 exactly) equal torch's."""
import numpy as np
import pytest
import torch

import compiler as C
import ops as O


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_bce_with_logits_gradient_at_zero_is_torchs(rng, backend):
    z = rng.standard_normal(8)
    z[[1, 5]] = 0.0                                   # the kink of |z| and relu(-z) in the stable form
    y = (rng.random(8) < 0.5).astype(np.float64)
    dtype = np.float64 if backend == "reference" else np.float32
    f = lambda z, y: O.binary_cross_entropy_with_logits(z, y)      # noqa: E731
    value, grad = C.value_and_grad(f, argnums=0, backend=backend)(z.astype(dtype), y.astype(dtype))
    zt = torch.tensor(z, requires_grad=True)
    want = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(y))
    want.backward()
    tol = 1e-12 if backend == "reference" else 1e-6
    assert abs(float(value) - want.item()) < tol * 10
    np.testing.assert_allclose(grad, zt.grad.numpy(), atol=tol)
