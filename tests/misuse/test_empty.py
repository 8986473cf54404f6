"""Reductions over an empty dimension, as torch, on both backends.

A sum over nothing is 0, a mean NaN (0/0), logsumexp -inf and softmax an empty result; a max
(amax, amin, argmax) has no value, so it is refused at trace time with the op, the shape and
the dim, where a Triton kernel would return its start value or whatever memory held.
"""
import warnings

import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from ops.errors import ShapeError
from tests.helpers import nonzero

BACKENDS = ["reference", "interpret"]

VALUED = [
    ("sum", lambda x: O.sum(x, 1), lambda x: torch.sum(x, 1)),
    ("sum-all", O.sum, torch.sum),
    ("mean", lambda x: O.mean(x, 1), lambda x: torch.mean(x, 1)),
    ("mean-all", O.mean, torch.mean),
    ("var", lambda x: O.var(x, 1), lambda x: torch.var(x, 1)),
    ("std", lambda x: O.std(x, 1), lambda x: torch.std(x, 1)),
    ("logsumexp", lambda x: O.logsumexp(x, 1), lambda x: torch.logsumexp(x, 1)),
    ("softmax", lambda x: O.softmax(x, 1), lambda x: torch.softmax(x, 1)),
    ("log_softmax", lambda x: O.log_softmax(x, 1), lambda x: torch.log_softmax(x, 1)),
    ("amax-of-the-other-dim", lambda x: O.amax(x, 0), lambda x: torch.amax(x, 0)),
    ("argmax-of-the-other-dim", lambda x: O.argmax(x, 0), lambda x: torch.argmax(x, 0)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ours, theirs", [pytest.param(o, t, id=name) for name, o, t in VALUED])
def test_a_reduction_over_nothing_has_torchs_value(ours, theirs, backend):
    x = np.ones((3, 0), np.float32)
    with np.errstate(all="ignore"):
        got = C.jit(ours, backend=backend)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # torch's "degrees of freedom is <= 0" for var and std
        want = theirs(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)        # NaN == NaN here, and -inf == -inf


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_gradient_of_a_mean_of_an_empty_row_is_empty(backend, rng):
    w = nonzero(rng, (4,)).astype(np.float32)
    _, (g,) = C.value_and_grad(lambda w, x: O.sum(w * O.sum(x, 1)), argnums=(0,), backend=backend)(
        w, np.ones((4, 0), np.float32))
    np.testing.assert_array_equal(g, np.zeros(4, np.float32))     # the sums are 0, so w's gradient is 0


REFUSED = [       # (op, ours, torch's, what the message says of the dim)
    ("amax", lambda x: O.amax(x, 1), lambda x: torch.amax(x, 1), "dim 1"),
    ("amax", lambda x: O.amax(x, -1, keepdim=True), lambda x: torch.amax(x, -1, keepdim=True), "dim 1"),
    ("amax", O.amax, torch.amax, "dim 1"),
    ("amin", lambda x: O.amin(x, 1), lambda x: torch.amin(x, 1), "dim 1"),
    ("argmax", lambda x: O.argmax(x, 1), lambda x: torch.argmax(x, 1), "dim 1"),
    ("argmax", O.argmax, torch.argmax, "dim to be specified"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op, ours, theirs, dim", [pytest.param(*case, id=f"{case[0]}-{i}")
                                                   for i, case in enumerate(REFUSED)])
def test_a_max_over_nothing_is_refused_naming_the_op_the_shape_and_the_dim(op, ours, theirs, dim, backend):
    x = np.ones((3, 0), np.float32)
    with pytest.raises(ShapeError) as info:
        C.jit(ours, backend=backend)(x)
    text = str(info.value)
    assert text.startswith(f"{op}:") and "(3, 0)" in text and dim in text, text
    assert "test_empty.py:" in text, text            # the user's line
    with pytest.raises((IndexError, RuntimeError), match=r"non-zero size|numel\(\) == 0"):      # as torch
        theirs(torch.from_numpy(x))
