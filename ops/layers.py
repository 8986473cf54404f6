"""Layers, Keras/PyTorch style, written functionally: a layer owns NumPy arrays, but its
forward is a pure function of (params, state, x), so that a whole training step can be
traced with the parameters and the state as the graph's inputs.

    from ops import layers as L

    model = L.Sequential([
        L.Conv2d(1, 8, 3, padding=1), L.BatchNorm2d(8), L.ReLU(), L.MaxPool2d(2),
        L.Flatten(), L.Dense(8 * 4 * 4, 10),
    ], input_shape=(1, 8, 8)).init(seed=0)
    print(model.summary())

    params = [a for _, a in model.parameters()]      # "conv2d.weight", "conv2d.bias", ...
    state = [a for _, a in model.states()]           # "batch_norm2d.running_mean", ...

    def loss(*args):                                  # traced: params and state are inputs
        p, s, (x, y) = args[:len(params)], args[len(params):-2], args[-2:]
        logits, _ = model.apply(list(p), list(s), x, training=True)
        return O.cross_entropy(logits, y)

    grads = C.grad(loss, argnums=tuple(range(len(params))))(*params, *state, x, y)
    model(x)                                          # eager (NumPy in, NumPy out), eval mode

Shapes given to `build`, `output_shape` and `input_shape` leave out the batch dimension
(Keras style: (1, 8, 8) for images [N, 1, 8, 8]); the summary prints it as None.

The state. `apply` / `forward` return (y, new_state): layers never mutate anything, so a
compiled step takes the state as inputs and returns the new state as outputs, and the
caller feeds it back next step (`model.set_states(new_state)` stores it in the model).
BatchNorm2d's state is its running mean and variance; Dropout's is its seed (below).

Dropout's randomness. O.dropout draws its mask from a counter-based generator (Philox) and
an integer seed, so the backward regenerates the mask instead of storing it. Each Dropout
layer keeps its seed as state: an int64 scalar drawn at `init` (so two Dropout layers draw
unrelated masks), used by the training forward and returned as seed + 1. A compiled step
that threads its state (as it must for BatchNorm anyway) thus gets a new mask every step
with nothing else to pass, and replaying a step with the same state replays its mask.
Evaluation mode is the identity and leaves the seed unchanged.

Each layer's nodes are traced inside `O.scope(layer.name)` (nested layers inside their
parent's scope), so the compiler's kernels and pictures are labelled with the layer names.
Names are Keras-style, unique within a model: conv2d, conv2d_1, dense, relu, ...
"""
from __future__ import annotations

import contextlib
import keyword
import math
import numbers
from collections import OrderedDict

import numpy as np

from ops import ir
from ops.errors import ArgumentError, ChainruleError, ShapeError, unknown_name
from ops.source import is_internal

from . import functional as F
from .dtypes import ORDER
from .evaluate import eager
from .tensor import Tensor

__all__ = ["Layer", "Conv2d", "Dense", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "MaxPool2d",
           "AvgPool2d", "GlobalAvgPool2d", "Flatten", "Dropout", "BatchNorm2d", "LayerNorm", "Residual",
           "Sequential", "initializer", "INITIALIZERS"]


# -- helpers ---------------------------------------------------------------------------------------

def _rng(seed_or_rng):
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if seed_or_rng is None or isinstance(seed_or_rng, numbers.Integral):
        return np.random.default_rng(seed_or_rng)
    raise ArgumentError(f"expected an int seed or a numpy.random.Generator, got {type(seed_or_rng).__name__}",
                        source=ir.capture_source())


def _shape(s, what="shape"):
    if isinstance(s, numbers.Integral):
        return (int(s),)
    try:
        return tuple(int(d) for d in s)
    except TypeError:
        raise ArgumentError(f"{what} must be a tuple of ints (without the batch dimension), got {s!r}",
                            source=ir.capture_source()) from None


def _pair(v, what, layer):
    if isinstance(v, numbers.Integral):
        return (int(v), int(v))
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, numbers.Integral) for i in v):
        return (int(v[0]), int(v[1]))
    raise ArgumentError(f"{what} must be an int or a pair of ints, got {v!r}", op=layer, source=ir.capture_source())


def _batched(shape):
    """A shape without its batch dimension, printed with None for the batch: (None, 1, 8, 8)."""
    return "(" + ", ".join(["None"] + [str(d) for d in shape]) + ")"


def _dtype_name(t):
    return t.dtype if isinstance(t, Tensor) else np.dtype(t.dtype).name


def _check_name(name):
    if not (isinstance(name, str) and name.isascii() and name.isidentifier() and not keyword.iskeyword(name)):
        raise ArgumentError(f"a layer name must be a Python identifier (the compiler uses it in kernel names), "
                            f"got {name!r}", source=ir.capture_source())
    return name


# -- initializers ----------------------------------------------------------------------------------
#
# Why: a layer's output variance is fan_in * Var(w) * E[x^2]. He (Kaiming) initialisation,
# Var(w) = 2 / fan_in, keeps it constant through layers followed by ReLU (which zeroes half
# of its input, halving E[x^2]); Xavier (Glorot), Var(w) = 2 / (fan_in + fan_out), keeps
# the variance of both the activations and the gradients about constant for activations
# that are linear near 0 (tanh, sigmoid). A uniform U(-b, b) has variance b^2 / 3, so
# He uniform has b = sqrt(6 / fan_in) and Xavier uniform b = sqrt(6 / (fan_in + fan_out)).
# (torch's own default for nn.Linear / nn.Conv2d, kaiming_uniform with a=sqrt(5), is
# b = 1 / sqrt(fan_in), a third of He's variance.) Biases start at zero.

def _he_uniform(rng, shape, fan_in, fan_out):
    b = math.sqrt(6.0 / fan_in)
    return rng.uniform(-b, b, shape)


def _he_normal(rng, shape, fan_in, fan_out):
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


def _xavier_uniform(rng, shape, fan_in, fan_out):
    b = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-b, b, shape)


def _xavier_normal(rng, shape, fan_in, fan_out):
    return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))


INITIALIZERS = {"he": _he_uniform, "he_uniform": _he_uniform, "he_normal": _he_normal,
                "xavier": _xavier_uniform, "xavier_uniform": _xavier_uniform, "xavier_normal": _xavier_normal}


def initializer(name):
    """The weight initializer called `name` (see INITIALIZERS): fn(rng, shape, fan_in, fan_out)."""
    if name not in INITIALIZERS:
        raise ArgumentError(f"unknown init {name!r}: choose one of {', '.join(INITIALIZERS)}",
                            source=ir.capture_source())
    return INITIALIZERS[name]


# -- the base class --------------------------------------------------------------------------------

def _at_its_line(layer):
    """A built-in layer's nodes (and their backward) carry the user's line that created the
    layer — `L.Conv2d(1, 6, 3)` in the model's definition — rather than the line that traced
    the model; a layer whose `call` is the user's own code keeps the lines inside it."""
    call = getattr(type(layer).call, "__code__", None)
    if layer.defined_at is None or call is None or not is_internal(call.co_filename):
        return contextlib.nullcontext()
    return ir.node_context(source=layer.defined_at)


class Layer:
    """A layer: parameters and state as ordered dicts of NumPy arrays, and a pure forward.

    Subclasses set `kind` (the base of the automatic name) and implement `param_shapes`,
    `output_shape`, `call`, and `state_shapes` and `_make_state` when they have state.
    """

    kind = "layer"

    def __init__(self, name=None):
        self._explicit_name = name is not None
        self.name = _check_name(name) if name is not None else self.kind
        self._params = OrderedDict()
        self._state = OrderedDict()
        self._built = False
        self.input_shape = None
        self._jits = {}
        self.defined_at = ir.capture_source()      # the user's line that made this layer

    # -- description ------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def param_shapes(self):
        """name -> shape of each parameter (known from the constructor's arguments)."""
        return OrderedDict()

    def param_names(self):
        return list(self.param_shapes())

    def state_shapes(self):
        """name -> shape of each state entry (running statistics, seeds; not trained)."""
        return OrderedDict()

    def state_names(self):
        return list(self.state_shapes())

    def num_parameters(self):
        return int(sum(math.prod(s) for s in self.param_shapes().values()))

    @property
    def params(self):
        self._require_built()
        return self._params

    @property
    def state(self):
        self._require_built()
        return self._state

    def _require_built(self):
        if not self.built:
            raise ChainruleError(f"{self.name} ({type(self).__name__}) has no parameters yet: call "
                                 "layer.build(in_shape, rng), or model.init() on its Sequential",
                                 source=ir.capture_source())
        trained_by = getattr(self, "trained_by", None)
        if trained_by is not None:          # a compiled train step holds newer values on the device
            trained_by.sync()

    # -- shapes and building ------------------------------------------------------------------
    def output_shape(self, in_shape):
        """The output's shape (without the batch dimension) for inputs of `in_shape`; raises a
        ShapeError naming the layer when the input does not fit."""
        return _shape(in_shape)

    def _shape_error(self, expected, got, why=""):
        # no user frame on the stack (the `chainrule` command built the model): the layer's own line
        return ShapeError(f"{self!r} expects an input of shape {expected}, got {_batched(got)}{why}",
                          op=self.name, source=ir.capture_source() or self.defined_at)

    def build(self, in_shape, rng=None):
        """Create the parameters (float32) and the state for inputs of `in_shape` (no batch
        dimension); returns the output shape."""
        in_shape = _shape(in_shape, "in_shape")
        out = self.output_shape(in_shape)
        rng = _rng(rng)
        self._params = self._make_params(rng)
        self._state = self._make_state(rng)
        self.input_shape, self._built = in_shape, True
        return out

    def _make_params(self, rng):
        return OrderedDict()

    def _make_state(self, rng):
        return OrderedDict()

    @property
    def built(self):
        return self._built

    @property
    def trainable(self):
        """Always True: a training step updates every parameter of the model."""
        return True

    @trainable.setter
    def trainable(self, value):
        # freezing is not built: accepting the flag would leave "frozen" weights training
        if value is not True:
            raise ArgumentError(f"{self.name}.trainable = {value!r}: freezing layers is not supported yet, and a "
                                "training step trains every parameter. To keep a layer's weights fixed, "
                                "differentiate only the others (C.value_and_grad(loss, argnums=...) with the "
                                "positions of the parameters to train) and update those yourself",
                                op=self.name, source=ir.capture_source())

    # -- running ------------------------------------------------------------------------------
    def call(self, params, state, x, training):
        """The forward on traced tensors (or arrays inside a trace): (y, new_state)."""
        raise NotImplementedError

    def forward(self, params, state, x, training=False):
        """(y, new_state) with params and state dicts (name -> array or traced Tensor).
        Inside a trace it adds the layer's nodes to the graph; outside, on NumPy arrays, it
        traces and runs itself on the reference backend and returns NumPy arrays."""
        if ir.current_trace() is None:
            return self._eager(params, state, x, training)
        return self.call(params, state, x, training)

    def _eager(self, params, state, x, training):
        pnames, snames = list(params), list(state)
        key = (bool(training), tuple(pnames), tuple(snames))
        fn = self._jits.get(key)
        if fn is None:
            np_, ns = len(pnames), len(snames)

            def run(*arrays):
                p = dict(zip(pnames, arrays[:np_]))
                s = dict(zip(snames, arrays[np_:np_ + ns]))
                y, new = self.call(p, s, arrays[-1], training)
                return (y,) + tuple(new[k] for k in snames)

            run.__name__ = self.name
            fn = self._jits[key] = eager(run)
        out = fn(*[np.asarray(params[k]) for k in pnames], *[np.asarray(state[k]) for k in snames], x)
        return out[0], OrderedDict(zip(snames, out[1:]))

    def __call__(self, x, training=False):
        """Run eagerly on a NumPy array with the layer's own parameters; returns a NumPy array.
        training=True also stores the new state (running statistics, seeds), as torch does."""
        y, new_state = self.forward(self.params, self.state, x, training)
        if training:
            self._store_state(new_state)
        return y

    def _store_state(self, new_state):
        for k, v in new_state.items():
            self._state[k] = np.asarray(v)

    def _store_params(self, new_params):
        for k, v in new_params.items():
            self._params[k] = np.asarray(v)

    # -- layers inside (containers override) ----------------------------------------------------
    def children(self):
        return []

    def _rows(self, in_shape, depth):
        """Summary rows (depth, label, output shape, parameter count) of this layer and those inside."""
        out = self.output_shape(in_shape)
        return [(depth, f"{self.name} ({type(self).__name__})", out, self.num_parameters())], out


# -- layers with parameters --------------------------------------------------------------------------

class Dense(Layer):
    """y = x W^T + b (torch's nn.Linear): weight [out_features, in_features], bias [out_features].
    init: "he" (default; He uniform, for layers followed by ReLU-like activations) or "xavier"
    (Glorot uniform, for tanh/sigmoid), or their "_normal" variants; the bias starts at zero."""

    kind = "dense"

    def __init__(self, in_features, out_features, bias=True, *, init="he", name=None):
        super().__init__(name)
        self.in_features, self.out_features, self.bias = int(in_features), int(out_features), bool(bias)
        self.init = init
        initializer(init)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}" + ("" if self.bias else ", bias=False")

    def param_shapes(self):
        shapes = OrderedDict(weight=(self.out_features, self.in_features))
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        if not in_shape or in_shape[-1] != self.in_features:
            raise self._shape_error(f"{_batched(in_shape[:-1] + (self.in_features,))} (in_features="
                                    f"{self.in_features})", in_shape)
        return in_shape[:-1] + (self.out_features,)

    def _make_params(self, rng):
        params = OrderedDict(weight=initializer(self.init)(rng, (self.out_features, self.in_features),
                                                           self.in_features, self.out_features).astype(np.float32))
        if self.bias:
            params["bias"] = np.zeros(self.out_features, np.float32)
        return params

    def call(self, params, state, x, training):
        return F.linear(x, params["weight"], params.get("bias")), state


Linear = Dense


class Conv2d(Layer):
    """torch's nn.Conv2d (groups=1, zero padding): weight [out, in, kh, kw], bias [out].
    init as for Dense, with fan_in = in_channels * kh * kw, fan_out = out_channels * kh * kw."""

    kind = "conv2d"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 *, init="he", name=None):
        super().__init__(name)
        if groups != 1:
            raise ArgumentError(f"groups={groups} is not supported (only groups=1)", op="Conv2d",
                                source=ir.capture_source())
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d")
        self.stride = _pair(stride, "stride", "Conv2d")
        self.dilation = _pair(dilation, "dilation", "Conv2d")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ArgumentError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}",
                                    op="Conv2d", source=ir.capture_source())
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding", "Conv2d")
        self.bias, self.init = bool(bias), init
        initializer(init)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + ("" if self.bias else ", bias=False")

    def param_shapes(self):
        shapes = OrderedDict(weight=(self.out_channels, self.in_channels) + self.kernel_size)
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        if len(in_shape) != 3 or in_shape[0] != self.in_channels:
            raise self._shape_error(f"(None, {self.in_channels}, H, W) (in_channels={self.in_channels})", in_shape)
        if self.padding == "same":
            return (self.out_channels,) + in_shape[1:]
        padding = (0, 0) if self.padding == "valid" else self.padding
        hw = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                   for n, p, d, k, s in zip(in_shape[1:], padding, self.dilation, self.kernel_size, self.stride))
        if min(hw) < 1:
            raise self._shape_error(f"(None, {self.in_channels}, H, W) with H, W at least the kernel's reach", in_shape,
                                    f": the {self.kernel_size} kernel does not fit")
        return (self.out_channels,) + hw

    def _make_params(self, rng):
        field = math.prod(self.kernel_size)
        shape = tuple(self.param_shapes()["weight"])
        w = initializer(self.init)(rng, shape, self.in_channels * field, self.out_channels * field)
        params = OrderedDict(weight=w.astype(np.float32))
        if self.bias:
            params["bias"] = np.zeros(self.out_channels, np.float32)
        return params

    def call(self, params, state, x, training):
        return F.conv2d(x, params["weight"], params.get("bias"), self.stride, self.padding, self.dilation), state


class BatchNorm2d(Layer):
    """torch's nn.BatchNorm2d. Parameters weight (1) and bias (0) per channel; state
    running_mean (0) and running_var (1). Training: normalize with the batch's mean and
    biased variance over (N, H, W), and return running stats moved towards the batch's,
    new = (1 - momentum) * old + momentum * batch, with the unbiased variance, as torch.
    Evaluation: normalize with the running stats. (momentum=None, torch's cumulative
    average, is not supported.)"""

    kind = "batch_norm2d"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *, name=None):
        super().__init__(name)
        if momentum is None:
            raise ArgumentError("momentum=None (a cumulative average) is not supported; give a number",
                                op="BatchNorm2d", source=ir.capture_source())
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)

    def state_shapes(self):
        c = (self.num_features,)
        return OrderedDict(running_mean=c, running_var=c) if self.track_running_stats else OrderedDict()

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def param_shapes(self):
        c = (self.num_features,)
        return OrderedDict(weight=c, bias=c) if self.affine else OrderedDict()

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        if len(in_shape) != 3 or in_shape[0] != self.num_features:
            raise self._shape_error(f"(None, {self.num_features}, H, W) (num_features={self.num_features})",
                                    in_shape)
        return in_shape

    def _make_params(self, rng):
        c = self.num_features
        return OrderedDict(weight=np.ones(c, np.float32), bias=np.zeros(c, np.float32)) if self.affine \
            else OrderedDict()

    def _make_state(self, rng):
        c = self.num_features
        return OrderedDict(running_mean=np.zeros(c, np.float32), running_var=np.ones(c, np.float32)) \
            if self.track_running_stats else OrderedDict()

    def call(self, params, state, x, training):
        w, b = params.get("weight"), params.get("bias")
        if not self.track_running_stats:
            return F.batch_norm(x, None, None, w, b, training=True, momentum=self.momentum, eps=self.eps), state
        rm, rv = state["running_mean"], state["running_var"]
        if not training:
            return F.batch_norm(x, rm, rv, w, b, training=False, momentum=self.momentum, eps=self.eps), state
        y = F.batch_norm(x, None, None, w, b, training=True, momentum=self.momentum, eps=self.eps)
        dims = (0,) + tuple(range(2, x.ndim))
        mean = F.mean(x, dims)
        var = F.var(x, dims, correction=1)           # unbiased, for the running estimate (as torch)
        m = self.momentum
        new = OrderedDict(running_mean=F.add(F.mul(rm, 1.0 - m), F.mul(mean, m)),
                          running_var=F.add(F.mul(rv, 1.0 - m), F.mul(var, m)))
        for k, old in (("running_mean", rm), ("running_var", rv)):       # the state keeps its dtype
            new[k] = F.to(new[k], _dtype_name(old))
        return y, new


class LayerNorm(Layer):
    """torch's nn.LayerNorm: normalize over the last len(normalized_shape) dimensions;
    weight starts at 1, bias at 0."""

    kind = "layer_norm"

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, *, name=None):
        super().__init__(name)
        self.normalized_shape = _shape(normalized_shape, "normalized_shape")
        self.eps, self.elementwise_affine, self.bias = float(eps), bool(elementwise_affine), bool(bias)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"

    def param_shapes(self):
        shapes = OrderedDict()
        if self.elementwise_affine:
            shapes["weight"] = self.normalized_shape
            if self.bias:
                shapes["bias"] = self.normalized_shape
        return shapes

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        k = len(self.normalized_shape)
        if in_shape[len(in_shape) - k:] != self.normalized_shape or len(in_shape) < k:
            raise self._shape_error("(None, ..., " + ", ".join(map(str, self.normalized_shape)) + ")", in_shape)
        return in_shape

    def _make_params(self, rng):
        return OrderedDict((k, (np.ones if k == "weight" else np.zeros)(s, np.float32))
                           for k, s in self.param_shapes().items())

    def call(self, params, state, x, training):
        return F.layer_norm(x, self.normalized_shape, params.get("weight"), params.get("bias"), self.eps), state


# -- layers without parameters ------------------------------------------------------------------------

class _Pointwise(Layer):
    fn = None

    def __init__(self, *, name=None):
        super().__init__(name)

    def call(self, params, state, x, training):
        return type(self).fn(x), state


class ReLU(_Pointwise):
    kind = "relu"
    fn = staticmethod(F.relu)

    def __init__(self, inplace=False, *, name=None):
        super().__init__(name=name)


class Sigmoid(_Pointwise):
    kind = "sigmoid"
    fn = staticmethod(F.sigmoid)


class Tanh(_Pointwise):
    kind = "tanh"
    fn = staticmethod(F.tanh)


class LeakyReLU(Layer):
    kind = "leaky_relu"

    def __init__(self, negative_slope=0.01, inplace=False, *, name=None):
        super().__init__(name)
        self.negative_slope = float(negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"

    def call(self, params, state, x, training):
        return F.leaky_relu(x, self.negative_slope), state


class Softmax(Layer):
    """Softmax along `dim`, which counts the batch dimension (dim=1: the features of [N, C])."""

    kind = "softmax"

    def __init__(self, dim=-1, *, name=None):
        super().__init__(name)
        self.dim = int(dim)

    def extra_repr(self):
        return f"dim={self.dim}"

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        if not -(len(in_shape) + 1) <= self.dim <= len(in_shape):
            raise self._shape_error(f"at least {self.dim + 1 if self.dim >= 0 else -self.dim} dimensions", in_shape)
        return in_shape

    def call(self, params, state, x, training):
        return F.softmax(x, self.dim), state


class _Pool(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, name=None):
        super().__init__(name)
        op = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", op)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", op)
        self.padding = _pair(padding, "padding", op)
        self.dilation = _pair(dilation, "dilation", op)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ArgumentError(f"padding {self.padding} must be at most half of kernel_size {self.kernel_size}",
                                op=op, source=ir.capture_source())

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        if len(in_shape) != 3:
            raise self._shape_error("(None, C, H, W)", in_shape)
        hw = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                   for n, p, d, k, s in zip(in_shape[1:], self.padding, self.dilation, self.kernel_size, self.stride))
        if min(hw) < 1:
            raise self._shape_error("(None, C, H, W) with H, W at least the window's reach", in_shape,
                                    f": the {self.kernel_size} window does not fit")
        return in_shape[:1] + hw


class MaxPool2d(_Pool):
    kind = "max_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, *, name=None):
        super().__init__(kernel_size, stride, padding, dilation, name)

    def call(self, params, state, x, training):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation), state


class AvgPool2d(_Pool):
    kind = "avg_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True, *, name=None):
        super().__init__(kernel_size, stride, padding, 1, name)
        self.count_include_pad = bool(count_include_pad)

    def call(self, params, state, x, training):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            count_include_pad=self.count_include_pad), state


class GlobalAvgPool2d(Layer):
    """The mean of each channel over H and W: [N, C, H, W] -> [N, C]."""

    kind = "global_avg_pool2d"

    def __init__(self, *, name=None):
        super().__init__(name)

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        if len(in_shape) != 3:
            raise self._shape_error("(None, C, H, W)", in_shape)
        return in_shape[:1]

    def call(self, params, state, x, training):
        return F.mean(x, (2, 3)), state


class Flatten(Layer):
    """torch's nn.Flatten: dims start_dim..end_dim (counting the batch dimension) become one."""

    kind = "flatten"

    def __init__(self, start_dim=1, end_dim=-1, *, name=None):
        super().__init__(name)
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def output_shape(self, in_shape):
        in_shape = _shape(in_shape)
        n = len(in_shape) + 1
        if not (-n <= self.start_dim < n and -n <= self.end_dim < n):
            raise self._shape_error(f"more dimensions (start_dim={self.start_dim}, end_dim={self.end_dim})", in_shape)
        start, end = self.start_dim % n, self.end_dim % n
        if start == 0:
            raise ArgumentError("Flatten in a model must keep the batch dimension: start_dim must be at least 1",
                                op=self.name, source=ir.capture_source())
        if start > end:
            raise self._shape_error(f"start_dim {self.start_dim} before end_dim {self.end_dim}", in_shape)
        full = (None,) + in_shape
        return tuple(full[1:start]) + (math.prod(full[start:end + 1]),) + tuple(full[end + 1:])

    def call(self, params, state, x, training):
        return F.flatten(x, self.start_dim, self.end_dim), state


class Dropout(Layer):
    """torch's nn.Dropout: in training, zero each element with probability p and scale the
    others by 1/(1-p); in evaluation, the identity. The mask comes from the layer's state
    `seed` (an int64 scalar drawn at build), and the training forward returns seed + 1: feed
    the new state back and every step draws a new mask (see the module's docstring)."""

    kind = "dropout"

    def __init__(self, p=0.5, inplace=False, *, name=None):
        super().__init__(name)
        if not 0.0 <= p <= 1.0:
            raise ArgumentError(f"p must be between 0 and 1, got {p}", op="Dropout", source=ir.capture_source())
        self.p = float(p)

    def extra_repr(self):
        return f"p={self.p}"

    def state_shapes(self):
        return OrderedDict(seed=())

    def _make_state(self, rng):
        return OrderedDict(seed=np.array(rng.integers(0, 2 ** 31), dtype=np.int64))

    def call(self, params, state, x, training):
        if not training:
            return x, state
        seed = state["seed"]
        return F.dropout(x, self.p, True, seed=seed), OrderedDict(seed=F.add(seed, 1))


# -- containers ---------------------------------------------------------------------------------------------

def _is_named_pair(value):
    """A (name, array) pair as parameters() returns, passed where the array alone belongs."""
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)


def _layers(arg, what):
    if isinstance(arg, Layer):
        return [arg]
    if isinstance(arg, (list, tuple)) and all(isinstance(a, Layer) for a in arg):
        return list(arg)
    raise ArgumentError(f"{what} must be a Layer or a list of Layers, got {arg!r}", source=ir.capture_source())


class _Container(Layer):
    """A layer made of layers: parameters and state are its children's, under qualified
    names "child.name"; each child runs inside O.scope(child.name)."""

    def children(self):
        return list(self._children)

    def _descendants(self):
        for child in self._children:
            yield child
            yield from child._descendants() if isinstance(child, _Container) else ()

    def _assign_names(self):
        """Keras-style names, unique within this container: the first conv2d is "conv2d", the
        next "conv2d_1", ...; names given explicitly are kept (and must be unique)."""
        layers = list(self._descendants())
        seen, taken = set(), set()
        for layer in layers:
            if id(layer) in seen:
                raise ArgumentError(f"the layer {layer.name} ({layer!r}) appears twice; a layer object can be used "
                                    "once (make another one to get separate weights)", source=ir.capture_source())
            seen.add(id(layer))
            if layer._explicit_name:
                if layer.name in taken:
                    raise ArgumentError(f"two layers are named {layer.name!r}; names must be unique within a model",
                                        source=ir.capture_source())
                taken.add(layer.name)
        counts = {}
        for layer in layers:
            if layer._explicit_name:
                continue
            n = counts.get(layer.kind, 0)
            while (candidate := layer.kind if n == 0 else f"{layer.kind}_{n}") in taken:
                n += 1
            layer.name = candidate
            taken.add(candidate)
            counts[layer.kind] = n + 1

    # -- names, parameters, state ---------------------------------------------------------------
    def param_shapes(self):
        return OrderedDict((f"{c.name}.{k}", s) for c in self._children for k, s in c.param_shapes().items())

    def state_shapes(self):
        return OrderedDict((f"{c.name}.{k}", s) for c in self._children for k, s in c.state_shapes().items())

    def num_parameters(self):
        return int(sum(c.num_parameters() for c in self._children))

    @property
    def built(self):                 # a container is built when every layer in it is
        return bool(self._children) and all(c.built for c in self._children)

    @property
    def params(self):
        self._require_built()
        return OrderedDict((f"{c.name}.{k}", v) for c in self._children for k, v in c.params.items())

    @property
    def state(self):
        self._require_built()
        return OrderedDict((f"{c.name}.{k}", v) for c in self._children for k, v in c.state.items())

    def _split(self, values, what):
        """{"child.name": v} -> {child: {"name": v}}."""
        out = {}
        names = self.param_names() if what == "parameter" else self.state_names()
        missing = [n for n in names if n not in values]
        if missing:
            raise ArgumentError(f"{self.name}: missing {what}{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)}", source=ir.capture_source())
        for c in self._children:
            own = c.param_names() if what == "parameter" else c.state_names()
            out[c] = OrderedDict((k, values[f"{c.name}.{k}"]) for k in own)
        return out

    def _store_state(self, new_state):
        for c, values in self._split(new_state, "state").items():
            c._store_state(values)

    def _store_params(self, new_params):
        for c, values in self._split(new_params, "parameter").items():
            c._store_params(values)

    @staticmethod
    def _run_child(child, params, state, x, training, new_state):
        with ir.scope(child.name), _at_its_line(child):
            y, s = child.call(params[child], state[child], x, training)
        new_state.update((f"{child.name}.{k}", v) for k, v in s.items())
        return y

    def _build_chain(self, children, in_shape, rng, after=None):
        return self._walk(children, in_shape, lambda child, shape: child.build(shape, rng), after)

    def _chain_shape(self, children, in_shape, after=None):
        return self._walk(children, in_shape, lambda child, shape: child.output_shape(shape), after)

    @staticmethod
    def _walk(children, in_shape, step, after=None):
        """Thread a shape through children; a shape error names the layer that made its input."""
        shape = in_shape
        for child in children:
            try:
                shape = step(child, shape)
            except ShapeError as e:
                if after is None:
                    raise
                raise ShapeError(f"{e.bare_message} (the output of {after})", op=e.op, source=e.source) from None
            after = child.name
        return shape

    def _rows(self, in_shape, depth):
        rows = [None]
        out = self._child_rows(in_shape, depth + 1, rows)
        rows[0] = (depth, f"{self.name} ({type(self).__name__})", out, self.num_parameters())
        return rows, out


class Sequential(_Container):
    """Layers one after the other: `Sequential([l1, l2, ...], input_shape=(1, 8, 8))` or
    `Sequential(l1, l2, ...)`. `init(seed)` builds every layer; `apply(params, state, x)`
    runs it with flat lists of parameters and state (what a compiled step passes)."""

    kind = "sequential"

    def __init__(self, *layers, name=None, input_shape=None):
        super().__init__(name)
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = layers[0]
        self._children = _layers(list(layers), "Sequential's layers")
        self.layers = self._children
        self.input_shape = _shape(input_shape, "input_shape") if input_shape is not None else None
        self._assign_names()

    def __len__(self):
        return len(self._children)

    def __iter__(self):
        return iter(self._children)

    def __getitem__(self, i):
        return self._children[i]

    def extra_repr(self):
        return "[" + ", ".join(f"{c.name}: {c!r}" for c in self._children) + "]"

    # -- building ------------------------------------------------------------------------------------
    def output_shape(self, in_shape):
        return self._chain_shape(self._children, _shape(in_shape))

    def build(self, in_shape, rng=None):
        self.input_shape = _shape(in_shape, "in_shape")
        return self._build_chain(self._children, self.input_shape, _rng(rng))

    def init(self, seed=0, input_shape=None):
        """Build every layer (parameters float32, state) for inputs of `input_shape` (without the
        batch dimension; default: the one given to the constructor); seed: an int or a
        numpy.random.Generator. Returns the model."""
        shape = _shape(input_shape, "input_shape") if input_shape is not None else self.input_shape
        if shape is None:
            raise ArgumentError("init needs the input shape (without the batch dimension): "
                                "Sequential([...], input_shape=(1, 8, 8)) or model.init(seed, input_shape=...)",
                                op=self.name, source=ir.capture_source())
        self.build(shape, _rng(seed))
        return self

    # -- flat lists, for compiled steps ---------------------------------------------------------------
    def parameters(self):
        """[(qualified name, array)] pairs, in the order `apply` takes the arrays: "conv2d.weight",
        ... (`apply` takes the arrays alone, [a for _, a in model.parameters()], or the dict
        dict(model.parameters()))."""
        return list(self.params.items())

    def states(self):
        """[(qualified name, array)] pairs of the state, in the order `apply` takes and returns
        the arrays."""
        return list(self.state.items())

    def set_parameters(self, arrays):
        """Store new parameter arrays (a flat list of arrays in `parameters()` order, or a dict by
        qualified name). Every array is checked first against the parameter it replaces (its
        shape, and a dtype of the same kind: float64 for float32 is allowed, an int is not); if
        one does not fit, an ArgumentError names it and nothing changes."""
        self._store_params(self.checked_parameters(arrays))

    def set_states(self, arrays):
        """Store a new state (a flat list of arrays in `states()` order, as `apply` returns it, or
        a dict), checked first as set_parameters checks parameters."""
        self._store_state(self.checked_states(arrays))

    def checked_parameters(self, arrays):
        """`arrays` (as set_parameters takes them) as a dict by qualified name, each array
        checked against the parameter it would replace (see set_parameters); changes nothing."""
        return self._checked(arrays, self.params, "parameter")

    def checked_states(self, arrays):
        """As checked_parameters, for the state."""
        return self._checked(arrays, self.state, "state array")

    def _checked(self, values, current, what):
        """All of `values` checked before any is stored, so a wrong array cannot leave the model
        half updated (a 64x10 weight where 10x64 is expected would fail only at a later call)."""
        values = self._as_dict(values, list(current), what + "s")
        unknown = [k for k in values if k not in current]
        missing = [k for k in current if k not in values]
        if unknown or missing:
            raise ArgumentError(f"{self.name}: " + "; ".join(
                f"{label} {what}{'s' if len(names) > 1 else ''} {', '.join(names)}"
                for label, names in (("unknown", unknown), ("missing", missing)) if names)
                + f"; its {what}s are {', '.join(current) or 'none'}; nothing was changed",
                source=ir.capture_source())
        checked = OrderedDict()
        for name, old in current.items():
            new = np.asarray(values[name])
            # another float width is a choice (a float64 model for gradient checks); another kind is a mistake
            if new.shape != old.shape or new.dtype.kind != old.dtype.kind or new.dtype.name not in ORDER:
                kind = {"f": "float32 or float64", "i": "int32 or int64", "b": "bool"}[old.dtype.kind]
                raise ArgumentError(f"{self.name}: {what} {name} must be {kind} of shape {old.shape} (it is "
                                    f"{old.dtype}), got {new.dtype} of shape {new.shape}; nothing was changed",
                                    source=ir.capture_source())
            checked[name] = new
        return checked

    def _as_dict(self, values, names, what):
        if isinstance(values, dict):
            return values
        values = list(values)
        if any(_is_named_pair(v) for v in values):
            pairs = "states" if what.startswith("state") else "parameters"
            raise ArgumentError(f"{self.name} takes the {what} as arrays (a list in {pairs}() order, or a dict by "
                                f"name), got the (name, array) pairs {pairs}() returns: pass [a for _, a in "
                                f"model.{pairs}()] or dict(model.{pairs}())", source=ir.capture_source())
        if len(values) != len(names):
            raise ArgumentError(f"{self.name} takes {len(names)} {what} ({', '.join(names) or 'none'}), "
                                f"got {len(values)}", source=ir.capture_source())
        return OrderedDict(zip(names, values))

    def apply(self, params, state, x, training=True):
        """(y, new_state): the model on x, with `params` and `state` flat lists of arrays (or
        traced Tensors) in the order of `parameters()` and `states()` — the arrays alone,
        [a for _, a in model.parameters()], not the (name, array) pairs those return — or dicts
        by qualified name (dict(model.parameters())). new_state is a list of arrays in
        `states()` order. Each layer runs inside O.scope(its name)."""
        params = self._as_dict(params, self.param_names(), "parameters")
        state = self._as_dict(state, self.state_names(), "state arrays")
        y, new_state = self.forward(params, state, x, training)
        return y, [new_state[k] for k in self.state_names()]

    def call(self, params, state, x, training):
        params, state, new_state = self._split(params, "parameter"), self._split(state, "state"), OrderedDict()
        for child in self._children:
            x = self._run_child(child, params, state, x, training, new_state)
        return x, new_state

    # -- description ----------------------------------------------------------------------------------
    def _child_rows(self, in_shape, depth, rows):
        shape = in_shape
        for child in self._children:
            child_rows, shape = child._rows(shape, depth)
            rows.extend(child_rows)
        return shape

    def summary(self, input_shape=None):
        """A table like Keras' model.summary(): each layer's name (type), output shape (None for
        the batch) and parameter count (layers inside a Residual indented), then the totals."""
        shape = _shape(input_shape) if input_shape is not None else self.input_shape
        if shape is None:
            raise ArgumentError("summary needs the input shape: Sequential([...], input_shape=...) or "
                                "summary(input_shape=...)", op=self.name, source=ir.capture_source())
        rows = []
        self._child_rows(shape, 0, rows)
        table = [("  " * d + label, _batched(out), f"{n:,}") for d, label, out, n in rows]
        header = ("Layer (type)", "Output Shape", "Param #")
        widths = [max(len(r[i]) for r in table + [header]) + 3 for i in range(3)]
        width = sum(widths)

        def line(r):
            return f"{r[0]:<{widths[0]}}{r[1]:<{widths[1]}}{r[2]:>{widths[2] - 3}}"

        total = self.num_parameters()
        state_values = sum(math.prod(s) for s in self.state_shapes().values())
        out = [f'Model: "{self.name}"', "_" * width, line(header), "=" * width]
        out += [line(r) for r in table]
        out += ["=" * width, f"Total params: {total:,} (a training step trains all of them)",
                f"State values (not trained: running statistics, dropout seeds): {state_values:,}", "_" * width]
        return "\n".join(out)


class Residual(_Container):
    """y = block(x) + shortcut(x); the shortcut defaults to the identity. block and shortcut
    are a Layer or a list of layers (run in order); both must give the same shape."""

    kind = "residual"

    def __init__(self, block, shortcut=None, *, name=None):
        super().__init__(name)
        self.block = _layers(block, "block")
        self.shortcut = _layers(shortcut, "shortcut") if shortcut is not None else []
        self._children = self.block + self.shortcut
        self._assign_names()

    def extra_repr(self):
        s = "block=[" + ", ".join(c.name for c in self.block) + "]"
        return s + (", shortcut=[" + ", ".join(c.name for c in self.shortcut) + "]" if self.shortcut else "")

    def _shapes(self, in_shape, fn):
        y = fn(self.block, in_shape)
        s = fn(self.shortcut, in_shape) if self.shortcut else in_shape
        if y != s:
            raise ShapeError(f"{self!r}: the block gives {_batched(y)} but the shortcut gives {_batched(s)}; "
                             "they must be equal to be added", op=self.name, source=ir.capture_source())
        return y

    def output_shape(self, in_shape):
        return self._shapes(_shape(in_shape), lambda layers, shape: self._chain_shape(layers, shape))

    def build(self, in_shape, rng=None):
        rng = _rng(rng)
        self.input_shape = _shape(in_shape, "in_shape")
        return self._shapes(self.input_shape, lambda layers, shape: self._build_chain(layers, shape, rng))

    def call(self, params, state, x, training):
        params, state, new_state = self._split(params, "parameter"), self._split(state, "state"), OrderedDict()
        y = x
        for child in self.block:
            y = self._run_child(child, params, state, y, training, new_state)
        s = x
        for child in self.shortcut:
            s = self._run_child(child, params, state, s, training, new_state)
        return F.add(y, s), new_state

    def _child_rows(self, in_shape, depth, rows):
        shape = in_shape
        for child in self.block:
            child_rows, shape = child._rows(shape, depth)
            rows.extend(child_rows)
        shape = in_shape
        for child in self.shortcut:
            child_rows, shape = child._rows(shape, depth)
            rows.extend(child_rows)
        return self.output_shape(in_shape)


# -- more activations: torch.nn's, each the functional op of the same name ----------------------------

class _Activation(Layer):
    """Applies `fn` with the keyword arguments the layer was made with (printed by repr)."""

    fn = None

    def __init__(self, *, name=None, **options):
        super().__init__(name)
        self.options = options

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())

    def call(self, params, state, x, training):
        return type(self).fn(x, **self.options), state


class GELU(_Activation):
    kind, fn = "gelu", staticmethod(F.gelu)

    def __init__(self, approximate="none", *, name=None):
        super().__init__(name=name, approximate=approximate)


class Softplus(_Activation):
    kind, fn = "softplus", staticmethod(F.softplus)

    def __init__(self, beta=1.0, threshold=20.0, *, name=None):
        super().__init__(name=name, beta=beta, threshold=threshold)


class ELU(_Activation):
    kind, fn = "elu", staticmethod(F.elu)

    def __init__(self, alpha=1.0, inplace=False, *, name=None):
        super().__init__(name=name, alpha=alpha)


class CELU(_Activation):
    kind, fn = "celu", staticmethod(F.celu)

    def __init__(self, alpha=1.0, inplace=False, *, name=None):
        super().__init__(name=name, alpha=alpha)


class Hardtanh(_Activation):
    kind, fn = "hardtanh", staticmethod(F.hardtanh)

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False, *, name=None):
        super().__init__(name=name, min_val=min_val, max_val=max_val)


class _Plain(_Activation):
    """An activation without options (`inplace`, accepted as torch's, changes nothing here)."""

    def __init__(self, inplace=False, *, name=None):
        super().__init__(name=name)


class SELU(_Plain):
    kind, fn = "selu", staticmethod(F.selu)


class SiLU(_Plain):
    kind, fn = "silu", staticmethod(F.silu)


class Mish(_Plain):
    kind, fn = "mish", staticmethod(F.mish)


class ReLU6(_Plain):
    kind, fn = "relu6", staticmethod(F.relu6)


class Hardsigmoid(_Plain):
    kind, fn = "hardsigmoid", staticmethod(F.hardsigmoid)


class Hardswish(_Plain):
    kind, fn = "hardswish", staticmethod(F.hardswish)


class LogSigmoid(_Activation):
    kind, fn = "logsigmoid", staticmethod(F.logsigmoid)

    def __init__(self, *, name=None):
        super().__init__(name=name)


__all__ += ["GELU", "Softplus", "ELU", "CELU", "Hardtanh", "SELU", "SiLU", "Mish", "ReLU6", "Hardsigmoid",
            "Hardswish", "LogSigmoid"]


def __getattr__(name):
    """`L.Dens` names the closest layers instead of a bare AttributeError."""
    if name.startswith("__"):
        raise AttributeError(f"module 'ops.layers' has no attribute {name!r}")
    raise unknown_name("ops.layers", name, __all__, "docs/training.md")
