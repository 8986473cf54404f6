"""Optimizers whose update rule is written in `ops`, purely functional (like optax).

    opt = O.optim.Adam(lr=1e-3)
    state = opt.init(params)                                   # NumPy arrays
    params, state = opt.update(params, grads, state, lr=lr)    # arrays, or traced Tensors

Why the update is written with ops rather than with NumPy after the step: then it is part
of the compiled training step. Traced inside the step (`C.jit`, `C.compile`), the update
of every parameter is a handful of pointwise nodes of the same graph as the loss and the
gradients, so the compiler fuses each parameter's update into one kernel (vertical fusion:
`m`, `v`, the bias correction and the new parameter are computed in registers and stored
once), and its sibling (horizontal) fusion puts the kernels of all parameters that read
one buffer, the learning rate given as an input, into one launch, like PyTorch's
multi-tensor `foreach` optimizers (see `compiler/fusion.py`). And the formulas read like
the papers': `m = beta1 * m + (1 - beta1) * g`, no in-place `addcmul_`.

The functions are pure: `update` returns new parameters and a new state, and changes
nothing. The state is a flat list of arrays, per parameter (momentum buffers, square
averages, Adam's m and v) then shared (Adam's step counter, a float32 scalar), with
readable names from `opt.state_names(param_names)` (`"w.exp_avg"`), so that a compiled
step can take it as inputs and return it as outputs.

The hyperparameters, their defaults and the formulas are torch.optim's: weight decay is L2
added to the gradient, Adam's bias correction counts the steps. The learning rate is a
Python float baked into the graph as a constant, or, passed as `update(..., lr=lr)` where
`lr` is a scalar input of the compiled step, a value that a schedule (`StepLR`,
`ExponentialLR`, computed in Python per epoch) changes without recompiling. Pass it to a
`C.jit` step as a NumPy scalar (`np.float32(schedule.lr(epoch))`): `C.jit` bakes a Python
float into the graph, so a new float would be a new compile.

Gradient clipping, before the update: `clip_by_value` and `clip_by_norm` (torch's
`clip_grad_value_` and `clip_grad_norm_`), or the optimizers' `clip_value=` and
`max_norm=` options.

Called on NumPy arrays (no traced Tensor among the arguments), `update` and the clipping
functions run the same code through `C.jit(..., backend="reference")`: traced once per
shape and run by the NumPy reference executor, so the eager and the compiled update are
one and the same graph.
"""
from __future__ import annotations

import numpy as np

from ops.errors import ArgumentError, unknown_name
from ops.ir import capture_source, node_context, scope

from . import functional as F
from .evaluate import eager
from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "clip_by_value", "clip_by_norm", "global_norm",
           "StepLR", "ExponentialLR", "constant"]


# -- running on NumPy arrays: the same code, traced and run by the reference executor --------

_EAGER = {}


def _shape(x):
    return x.shape if isinstance(x, Tensor) else np.shape(x)


def _traced(args):
    return any(isinstance(a, Tensor) for a in args)


def _eager(key, fn, arrays, cache=_EAGER):
    """fn(*arrays) on NumPy arrays: fn is traced (once per key and shapes) and run by the
    reference evaluator (ops/evaluate.py); returns the list of its outputs."""
    compiled = cache.get(key)
    if compiled is None:
        compiled = cache[key] = eager(fn)
    return compiled(*arrays)


def _lr_value(lr, default):
    """The learning rate as the update uses it: a Python float (a constant of the graph), or
    a scalar Tensor (an input of the graph)."""
    if lr is None:
        return float(default)
    if isinstance(lr, Tensor):
        if lr.shape != ():
            raise ArgumentError(f"lr must be a scalar, got a tensor of shape {lr.shape}")
        return lr
    if np.ndim(lr) != 0:
        raise ArgumentError(f"lr must be a scalar, got an array of shape {np.shape(lr)}")
    return float(lr)


def _as(value, dtype):
    """A scalar Tensor cast to the parameter's dtype, so that a float64 learning rate does not
    turn float32 parameters into float64 ones (a Python float is weak: it takes p's dtype)."""
    return F.to(value, dtype) if isinstance(value, Tensor) else value


# -- clipping ----------------------------------------------------------------------------------

def _clip_value(grads, clip_value):
    with scope("clip_by_value"):
        return [F.clamp(g, -clip_value, clip_value) for g in grads]


def _global_norm(grads):
    with scope("global_norm"):
        total = None
        for g in grads:
            square = F.sum(g * g)
            total = square if total is None else total + square
        return F.sqrt(total)


def _clip_norm(grads, max_norm):
    with scope("clip_by_norm"):
        scale = F.minimum(max_norm / (_global_norm(grads) + 1e-6), 1.0)   # no Python `if`: it traces
        return [g * _as(scale, g.dtype) for g in grads]


def clip_by_value(grads, clip_value):
    """Every gradient element clamped to [-clip_value, clip_value]
    (torch.nn.utils.clip_grad_value_). grads: a list of arrays or Tensors; returns a new list."""
    grads, clip_value = list(grads), float(clip_value)
    if _traced(grads):
        return _clip_value(grads, clip_value)
    return _eager(("clip_by_value", len(grads), clip_value),
                  lambda *gs: tuple(_clip_value(gs, clip_value)), grads)


def global_norm(grads):
    """The 2-norm of all the gradients together: sqrt(sum over every element of g**2)."""
    grads = list(grads)
    if _traced(grads):
        return _global_norm(grads)
    return _eager(("global_norm", len(grads)), lambda *gs: _global_norm(gs), grads)[0]


def clip_by_norm(grads, max_norm):
    """All gradients scaled together so that their global 2-norm is at most max_norm
    (torch.nn.utils.clip_grad_norm_ with norm_type=2):

        total_norm = sqrt(sum of g**2 over every element of every gradient)
        g = g * min(1, max_norm / (total_norm + 1e-6))

    grads: a list of arrays or Tensors; returns a new list."""
    grads, max_norm = list(grads), float(max_norm)
    if _traced(grads):
        return _clip_norm(grads, max_norm)
    return _eager(("clip_by_norm", len(grads), max_norm),
                  lambda *gs: tuple(_clip_norm(gs, max_norm)), grads)


# -- the optimizers -----------------------------------------------------------------------------

class Optimizer:
    """An update rule: `init(params) -> state`, `update(params, grads, state, lr) -> (params,
    state)`. A subclass names its state (`slots`: one array per parameter, shaped like it;
    `shared`: float32 scalars) and writes `_step` with ops on Tensors."""

    slots: tuple = ()
    shared: tuple = ()

    def __init__(self, lr, clip_value=None, max_norm=None):
        if lr < 0.0:
            raise ArgumentError(f"{type(self).__name__}: invalid learning rate {lr}")
        self.lr = float(lr)
        self.defined_at = capture_source()     # the update's nodes point at the line that made the optimizer
        self.clip_value = None if clip_value is None else float(clip_value)
        self.max_norm = None if max_norm is None else float(max_norm)

    def init(self, params):
        """The initial state for `params` (a list of NumPy arrays): zeros, flat, per parameter
        then shared (see `state_names`)."""
        params = [np.asarray(p) for p in params]
        state = [np.zeros_like(p) for p in params for _ in self.slots]
        return state + [np.zeros((), np.float32) for _ in self.shared]

    def state_names(self, param_names):
        """Names for the arrays of the state: ["w.exp_avg", "w.exp_avg_sq", ..., "step"]."""
        return [f"{name}.{slot}" for name in param_names for slot in self.slots] + list(self.shared)

    def update(self, params, grads, state, lr=None):
        """One step: returns (new_params, new_state), lists like params and state. Every
        argument may be NumPy arrays or traced Tensors. lr: None uses the constructor's lr, a
        constant of the graph; a scalar Tensor is an input of the graph (cast to each
        parameter's dtype), so a schedule does not recompile. While tracing, a number or a
        NumPy scalar is a constant; on arrays, any lr given is an input of the cached program."""
        params, grads, state = list(params), list(grads), list(state)
        self._check(params, grads, state)
        if _traced(params + grads + state + [lr]):
            return self._update(params, grads, state, _lr_value(lr, self.lr))
        n, s = len(params), len(state)
        dtype = np.asarray(params[0]).dtype if params else np.float32
        arrays = params + grads + state
        if lr is not None:        # an input, so that a new value does not recompile
            arrays.append(np.asarray(lr, dtype=dtype))

        def step(*args):
            new_params, new_state = self._update(list(args[:n]), list(args[n:2 * n]), list(args[2 * n:2 * n + s]),
                                                 _lr_value(args[2 * n + s] if lr is not None else None, self.lr))
            return tuple(new_params + new_state)
        out = _eager((n, s, lr is not None), step, arrays, cache=self.__dict__.setdefault("_compiled", {}))
        return out[:n], out[n:]

    def _update(self, params, grads, state, lr):
        if self.clip_value is not None:
            grads = _clip_value(grads, self.clip_value)
        if self.max_norm is not None:
            grads = _clip_norm(grads, self.max_norm)
        k, n = len(self.slots), len(params)
        per = [state[i * k:(i + 1) * k] for i in range(n)]
        shared = state[n * k:]
        with scope(type(self).__name__.lower()), node_context(source=self.defined_at):   # nodes say "adam"
            new_params, new_per, new_shared = self._step(params, grads, per, shared, lr)
        return new_params, [a for slots in new_per for a in slots] + list(new_shared)

    def _step(self, params, grads, per, shared, lr):
        """(params, grads, per-parameter slots, shared scalars, lr) -> the new ones."""
        raise NotImplementedError

    def _check(self, params, grads, state):
        name = type(self).__name__
        if len(grads) != len(params):
            raise ArgumentError(f"{name}.update: {len(params)} parameters but {len(grads)} gradients")
        expected = len(params) * len(self.slots) + len(self.shared)
        if len(state) != expected:
            raise ArgumentError(f"{name}.update: the state has {len(state)} arrays, expected {expected} "
                                f"({', '.join(self.state_names(['p']) or ['none'])} for each parameter p); "
                                "make it with init(params)")
        for i, (p, g) in enumerate(zip(params, grads)):
            if _shape(p) != _shape(g):
                raise ArgumentError(f"{name}.update: parameter {i} has shape {_shape(p)} but its gradient "
                                    f"has shape {_shape(g)}")
            for slot, a in zip(self.slots, state[i * len(self.slots):(i + 1) * len(self.slots)]):
                if _shape(a) != _shape(p):
                    raise ArgumentError(f"{name}.update: state {slot} of parameter {i} has shape {_shape(a)}, "
                                        f"expected {_shape(p)}")

    def _options(self):
        clip = {"clip_value": self.clip_value, "max_norm": self.max_norm}
        return "".join(f", {k}={v}" for k, v in clip.items() if v is not None)


class SGD(Optimizer):
    """Stochastic gradient descent, with momentum (torch.optim.SGD):

        g = g + weight_decay * p
        b = momentum * b + (1 - dampening) * g       (b = g at the first step)
        g = g + momentum * b   if nesterov   else   b
        p = p - lr * g

    State: a `momentum_buffer` per parameter when momentum != 0 (and a `step` counter when
    dampening != 0, to know the first step)."""

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 clip_value=None, max_norm=None):
        super().__init__(lr, clip_value, max_norm)
        if momentum < 0.0:
            raise ArgumentError(f"SGD: invalid momentum value {momentum}")
        if weight_decay < 0.0:
            raise ArgumentError(f"SGD: invalid weight_decay value {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ArgumentError("SGD: Nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening = float(momentum), float(dampening)
        self.weight_decay, self.nesterov = float(weight_decay), bool(nesterov)
        self.slots = ("momentum_buffer",) if momentum != 0 else ()
        self.shared = ("step",) if momentum != 0 and dampening != 0 else ()

    def __repr__(self):
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
                f"weight_decay={self.weight_decay}, nesterov={self.nesterov}{self._options()})")

    def _step(self, params, grads, per, shared, lr):
        new_params, new_per = [], []
        mu, wd = self.momentum, self.weight_decay
        for p, g, slots in zip(params, grads, per):
            if wd != 0:
                g = g + wd * p
            if mu != 0:
                (b,) = slots
                if shared:           # torch starts the buffer at g: no dampening at the first step
                    first = F.to(shared[0] == 0.0, p.dtype)
                    b = mu * b + (1.0 - self.dampening * (1.0 - first)) * g
                else:
                    b = mu * b + g
                g = g + mu * b if self.nesterov else b
                new_per.append([b])
            else:
                new_per.append([])
            new_params.append(p - _as(lr, p.dtype) * g)
        return new_params, new_per, [shared[0] + 1.0] if shared else []


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop; Hinton's lecture 6e):

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g**2
        a = alpha * a + (1 - alpha) * g                    (centered only)
        d = sqrt(v - a**2) + eps   if centered   else   sqrt(v) + eps
        b = momentum * b + g / d;  p = p - lr * b           (momentum > 0)
        p = p - lr * g / d                                  (momentum = 0)

    State per parameter: `square_avg`, then `momentum_buffer` (momentum > 0) and
    `grad_avg` (centered)."""

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 clip_value=None, max_norm=None):
        super().__init__(lr, clip_value, max_norm)
        for name, value in (("eps", eps), ("momentum", momentum), ("weight_decay", weight_decay), ("alpha", alpha)):
            if value < 0.0:
                raise ArgumentError(f"RMSprop: invalid {name} value {value}")
        self.alpha, self.eps, self.weight_decay = float(alpha), float(eps), float(weight_decay)
        self.momentum, self.centered = float(momentum), bool(centered)
        self.slots = ("square_avg",) + (("momentum_buffer",) if momentum > 0 else ()) + \
                     (("grad_avg",) if centered else ())

    def __repr__(self):
        return (f"RMSprop(lr={self.lr}, alpha={self.alpha}, eps={self.eps}, weight_decay={self.weight_decay}, "
                f"momentum={self.momentum}, centered={self.centered}{self._options()})")

    def _step(self, params, grads, per, shared, lr):
        new_params, new_per = [], []
        alpha, wd = self.alpha, self.weight_decay
        for p, g, slots in zip(params, grads, per):
            state = dict(zip(self.slots, slots))
            if wd != 0:
                g = g + wd * p
            v = alpha * state["square_avg"] + (1 - alpha) * (g * g)
            new = [v]
            if self.centered:
                a = alpha * state["grad_avg"] + (1 - alpha) * g
                d = F.sqrt(v - a * a) + self.eps
            else:
                d = F.sqrt(v) + self.eps
            lr_p = _as(lr, p.dtype)
            if self.momentum > 0:
                b = self.momentum * state["momentum_buffer"] + g / d
                p = p - lr_p * b
                new.append(b)
            else:
                p = p - lr_p * (g / d)
            if self.centered:
                new.append(a)
            new_params.append(p)
            new_per.append(new)
        return new_params, new_per, []


class Adam(Optimizer):
    """Adam (torch.optim.Adam; Kingma & Ba, 2015), with t the step count:

        t = t + 1
        g = g + weight_decay * p                 (L2, added to the gradient, as in torch)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        v_max = max(v_max, v)                    (amsgrad: v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    State: `exp_avg` and `exp_avg_sq` per parameter (and `max_exp_avg_sq` with amsgrad),
    then `step`, a float32 scalar shared by all parameters."""

    shared = ("step",)

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 clip_value=None, max_norm=None):
        super().__init__(lr, clip_value, max_norm)
        beta1, beta2 = betas
        if not 0.0 <= beta1 < 1.0 or not 0.0 <= beta2 < 1.0:
            raise ArgumentError(f"Adam: invalid betas {betas}: each must be in [0, 1)")
        if eps < 0.0 or weight_decay < 0.0:
            raise ArgumentError(f"Adam: invalid eps {eps} or weight_decay {weight_decay}")
        self.betas = (float(beta1), float(beta2))
        self.eps, self.weight_decay, self.amsgrad = float(eps), float(weight_decay), bool(amsgrad)
        self.slots = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())

    def __repr__(self):
        return (f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay}, "
                f"amsgrad={self.amsgrad}{self._options()})")

    def _step(self, params, grads, per, shared, lr):
        beta1, beta2 = self.betas
        t = shared[0] + 1.0
        corrections = {}          # per dtype: (1 - beta1**t, sqrt(1 - beta2**t)), computed once
        new_params, new_per = [], []
        for p, g, slots in zip(params, grads, per):
            if self.weight_decay != 0:
                g = g + self.weight_decay * p
            m = beta1 * slots[0] + (1 - beta1) * g
            v = beta2 * slots[1] + (1 - beta2) * (g * g)
            new = [m, v]
            if self.amsgrad:
                v = F.maximum(slots[2], v)
                new.append(v)
            if p.dtype not in corrections:
                tp = F.to(t, p.dtype)        # the count is exact in float32; the powers in p's dtype
                corrections[p.dtype] = (1 - beta1 ** tp, F.sqrt(1 - beta2 ** tp))
            bc1, bc2_sqrt = corrections[p.dtype]
            step_size = _as(lr, p.dtype) / bc1
            new_params.append(p - step_size * (m / (F.sqrt(v) / bc2_sqrt + self.eps)))
            new_per.append(new)
        return new_params, new_per, [t]


# -- learning-rate schedules: Python numbers, fed to the step as an input ------------------------

class Schedule:
    """A learning rate per epoch (or step), computed in Python: `schedule.lr(epoch)`. Feed it
    to a compiled step as an input, `np.float32(schedule.lr(epoch))`, and a new value does
    not recompile."""

    def lr(self, epoch):
        raise NotImplementedError

    def __call__(self, epoch):
        return self.lr(epoch)


class StepLR(Schedule):
    """base_lr * gamma ** (epoch // step_size) (torch.optim.lr_scheduler.StepLR)."""

    def __init__(self, base_lr, step_size, gamma=0.1):
        if int(step_size) != step_size or step_size < 1:
            raise ArgumentError(f"StepLR: step_size must be a positive integer, got {step_size!r}")
        self.base_lr, self.step_size, self.gamma = float(base_lr), int(step_size), float(gamma)

    def lr(self, epoch):
        return self.base_lr * self.gamma ** (int(epoch) // self.step_size)

    def __repr__(self):
        return f"StepLR(base_lr={self.base_lr}, step_size={self.step_size}, gamma={self.gamma})"


class ExponentialLR(Schedule):
    """base_lr * gamma ** epoch (torch.optim.lr_scheduler.ExponentialLR)."""

    def __init__(self, base_lr, gamma):
        self.base_lr, self.gamma = float(base_lr), float(gamma)

    def lr(self, epoch):
        return self.base_lr * self.gamma ** int(epoch)

    def __repr__(self):
        return f"ExponentialLR(base_lr={self.base_lr}, gamma={self.gamma})"


class Constant(Schedule):
    """The same learning rate at every epoch."""

    def __init__(self, lr):
        self.base_lr = float(lr)

    def lr(self, epoch):
        return self.base_lr

    def __repr__(self):
        return f"constant({self.base_lr})"


def constant(lr):
    """A schedule that always gives lr."""
    return Constant(lr)


def __getattr__(name):
    """`O.optim.Adamw` names the closest optimizers instead of a bare AttributeError."""
    if name.startswith("__"):
        raise AttributeError(f"module 'ops.optim' has no attribute {name!r}")
    raise unknown_name("ops.optim", name, __all__, "docs/training.md")
