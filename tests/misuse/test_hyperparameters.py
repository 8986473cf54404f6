"""Bad hyper-parameters of the windowed ops (conv2d, the pools) are refused at trace time,
where torch refuses them, with the argument, its value and the user's line.

Before, the Triton backend returned a number for `padding=-1` or `dilation=0`, the reference
failed later naming neither ("index can't contain negative values"), and `stride=0` raised a
bare ZeroDivisionError from inside the shape rule. Every case here is also checked against
torch: torch refuses exactly these, and accepts the edge values next to them.
"""
import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from ops.errors import ArgumentError, ShapeError
from tests.helpers import nonzero, rel_error

TF = torch.nn.functional
IMAGE = (2, 3, 5, 5)
WEIGHT = (4, 3, 3, 3)


def _conv(weight=WEIGHT, **kw):
    return (lambda x, w: O.conv2d(x, w, **kw)), (lambda x, w: TF.conv2d(x, w, **kw)), [IMAGE, weight]


def _pool(name, *args, image=IMAGE, **kw):
    return (lambda x: getattr(O, name)(x, *args, **kw)), (lambda x: getattr(TF, name)(x, *args, **kw)), [image]


# (id, (ours, torch's, input shapes), error type, what the message must say)
REFUSED = [
    ("conv2d-negative-padding", _conv(padding=-1), ArgumentError, ["padding", "-1"]),
    ("conv2d-negative-padding-pair", _conv(padding=(0, -2)), ArgumentError, ["padding", "-2"]),
    ("conv2d-zero-dilation", _conv(dilation=0), ArgumentError, ["dilation", "0"]),
    ("conv2d-zero-stride", _conv(stride=0), ArgumentError, ["stride", "0"]),
    ("conv2d-negative-stride", _conv(stride=(1, -1)), ArgumentError, ["stride", "-1"]),
    ("conv2d-zero-groups", _conv(groups=0), ArgumentError, ["groups=0"]),
    ("conv2d-kernel-larger-than-image", _conv(weight=(4, 3, 7, 7)), ShapeError, ["7x7", "5x5", "too small"]),
    ("conv2d-dilated-kernel-larger-than-image", _conv(dilation=3), ShapeError, ["dilation (3, 3)", "too small"]),
    ("conv2d-no-output-channel", _conv(weight=(0, 3, 3, 3)), ShapeError, ["(0, 3, 3, 3)", "empty"]),
    ("conv2d-empty-kernel", _conv(weight=(4, 3, 0, 3)), ShapeError, ["(4, 3, 0, 3)", "empty"]),
    *[(f"{pool}-{what}", _pool(pool, *args, **kw), error, words)
      for pool in ("max_pool2d", "avg_pool2d")
      for what, args, kw, error, words in [
          ("zero-kernel", (0,), {}, ArgumentError, ["kernel_size", "0"]),
          ("negative-kernel", (-1,), {}, ArgumentError, ["kernel_size", "-1"]),
          ("zero-stride", (2,), {"stride": 0}, ArgumentError, ["stride", "0"]),
          ("negative-stride", (2,), {"stride": -1}, ArgumentError, ["stride", "-1"]),
          ("negative-padding", (2,), {"padding": -1}, ArgumentError, ["padding", "-1"]),
          ("padding-over-half-the-kernel", (3,), {"padding": 2}, ArgumentError, ["padding=(2, 2)", "half"]),
          ("padding-over-half-a-2-kernel", ((2, 3),), {"padding": (2, 1)}, ArgumentError, ["padding=(2, 1)"]),
          ("window-larger-than-image", (7,), {}, ShapeError, ["7x7", "too small"]),
          ("no-channel", (2,), {"image": (2, 0, 5, 5)}, ShapeError, ["(2, 0, 5, 5)", "non-empty"]),
      ]],
    ("max_pool2d-zero-dilation", _pool("max_pool2d", 2, dilation=0), ArgumentError, ["dilation", "0"]),
    ("avg_pool2d-zero-divisor", _pool("avg_pool2d", 2, divisor_override=0), ArgumentError,
     ["divisor_override", "0"]),
    ("adaptive_avg_pool2d-negative-size", _pool("adaptive_avg_pool2d", -1), ArgumentError, ["output_size", "-1"]),
    ("adaptive_avg_pool2d-negative-width", _pool("adaptive_avg_pool2d", (2, -3)), ArgumentError,
     ["output_size", "-3"]),
    ("adaptive_avg_pool2d-empty-image", _pool("adaptive_avg_pool2d", 2, image=(2, 3, 0, 5)), ShapeError,
     ["(2, 3, 0, 5)", "non-empty"]),
]


@pytest.mark.parametrize("case, error, words", [pytest.param(c, e, w, id=name) for name, c, e, w in REFUSED])
def test_a_bad_hyperparameter_is_refused_at_trace_time_naming_it(case, error, words):
    ours, theirs, shapes = case
    with pytest.raises(Exception):                     # torch refuses it too
        theirs(*(torch.ones(s) for s in shapes))
    with pytest.raises(error) as caught:
        C.trace(ours, *(O.spec(s) for s in shapes))
    message = str(caught.value)
    assert "ZeroDivision" not in message
    for word in words:
        assert word in message, message
    assert "test_hyperparameters.py:" in message, message


@pytest.mark.parametrize("backend", ["reference", "interpret"])
@pytest.mark.parametrize("kw", [dict(padding=-1), dict(dilation=0), dict(stride=0)])
def test_the_reported_conv2d_arguments_fail_the_same_on_every_backend(kw, backend, rng):
    """The issue's cases, through value_and_grad: the same ArgumentError before anything runs."""
    x, w = nonzero(rng, IMAGE, dtype=np.float32), nonzero(rng, WEIGHT, dtype=np.float32)
    step = C.value_and_grad(lambda w, x: O.sum(O.conv2d(x, w, **kw)), backend=backend)
    with pytest.raises(ArgumentError) as caught:
        step(w, x)
    name, value = next(iter(kw.items()))
    assert f"{name} must be" in str(caught.value) and f"{name}=({value}, {value})" in str(caught.value)
    assert "test_hyperparameters.py:" in str(caught.value)


@pytest.mark.parametrize("backend", ["reference", "interpret"])
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_a_zero_stride_pool_is_an_argument_error_not_a_zero_division(op, backend, rng):
    x = nonzero(rng, IMAGE, dtype=np.float32)
    with pytest.raises(ArgumentError, match="stride must be positive") as caught:
        C.jit(lambda x: getattr(O, op)(x, 2, stride=0), backend=backend)(x)
    assert caught.value.op == op


# Edge values torch accepts: they must keep working, and equal torch.
ACCEPTED = [
    ("conv2d-stride-past-the-image", _conv(stride=9)),
    ("conv2d-kernel-as-large-as-the-padded-image", _conv(weight=(4, 3, 7, 7), padding=1)),
    ("conv2d-empty-batch", (lambda x, w: O.conv2d(x, w), lambda x, w: TF.conv2d(x, w), [(0, 3, 5, 5), WEIGHT])),
    ("max_pool2d-padding-half-the-kernel", _pool("max_pool2d", 2, padding=1)),
    ("avg_pool2d-padding-half-the-kernel", _pool("avg_pool2d", (3, 2), padding=(1, 1), count_include_pad=False)),
    ("max_pool2d-stride-past-the-image", _pool("max_pool2d", 2, stride=7)),
    ("avg_pool2d-negative-divisor", _pool("avg_pool2d", 2, divisor_override=-3)),
    ("max_pool2d-kernel-as-large-as-the-image", _pool("max_pool2d", 5)),
    ("max_pool2d-empty-batch", _pool("max_pool2d", 2, image=(0, 3, 5, 5))),
    ("adaptive_avg_pool2d-larger-than-the-image", _pool("adaptive_avg_pool2d", (7, 6))),
    ("adaptive_avg_pool2d-to-nothing", _pool("adaptive_avg_pool2d", (0, 2))),
]


@pytest.mark.parametrize("backend", ["reference", "interpret"])
@pytest.mark.parametrize("case", [pytest.param(c, id=name) for name, c in ACCEPTED])
def test_edge_values_torch_accepts_still_work(case, backend, rng):
    ours, theirs, shapes = case
    dtype = np.float64 if backend == "reference" else np.float32
    xs = [nonzero(rng, s, dtype=dtype) for s in shapes]
    want = theirs(*(torch.tensor(x, dtype=torch.float64) for x in xs)).numpy()
    got = C.jit(ours, backend=backend)(*xs)
    assert got.shape == want.shape
    assert rel_error(got, want) < (1e-12 if backend == "reference" else 1e-5)
