"""One compiled program for a whole training step: forward, backward and optimizer update.

    step = C.compile_train_step(model, O.cross_entropy, O.optim.Adam(), O.spec((64, 1, 8, 8)),
                                O.spec((64,), "int64"))
    loss, logits = step(x_batch, y_batch)          # parameters and optimizer state updated
    predictions = step.evaluate(x_test)            # the eval program: inference only

Frameworks run a training step as three phases: the forward, the backward (autograd), then
`optimizer.step()` over every parameter. Here the three are one traced function, so the
compiler sees all of it: the update of a parameter fuses with the last kernel of its
gradient, the updates of all parameters share one launch (sibling fusion), and the memory
plan covers the whole step. The traced program takes every parameter, model state (batch
norm's running statistics, dropout seeds), optimizer state, the learning rate (an input, so
a schedule never recompiles) and a batch; it returns the loss, the logits and the new value
of each parameter and state. Those new values are *carried* (`compile(carry=...)`): they stay
on the device between steps, and the update kernel writes each new value over the old one
where the memory plan proves that safe (04_memory.txt lists which); only the batch and the
learning rate go in, only the loss and the logits come out.
"""
from __future__ import annotations

import inspect
import re

import numpy as np

from ops.errors import ArgumentError
from ops.tensor import spec as make_spec

from .api import compile, value_and_grad


def _identifier(name):
    """A qualified name ("conv2d.weight", "conv2d.weight.exp_avg") as a Python identifier."""
    return re.sub(r"\W", "_", name)


class TrainStep:
    """A model, its loss and its optimizer compiled into one training step (see the module
    docstring). Parameters, model state and optimizer state live on the device between
    calls; `params`, `states` and `opt_state` copy them out, and the model's own arrays are
    brought up to date whenever it reads them, so `model(x)` sees the trained weights."""

    def __init__(self, model, loss, optimizer, x_spec, y_spec, backend=None, lr=None, autotune=None, replay=None):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.param_names = [n for n, _ in model.parameters()]
        self.state_names = [n for n, _ in model.states()]
        params = [np.array(a) for _, a in model.parameters()]
        states = [np.array(a) for _, a in model.states()]
        opt_state = [np.array(a) for a in optimizer.init(params)]
        self.opt_names = list(optimizer.state_names(self.param_names))
        self.lr = optimizer.lr if lr is None else lr
        self.steps = 0
        n_p, n_s, n_o = len(params), len(states), len(opt_state)
        self._sizes = (n_p, n_s, n_o)

        def train_step(*args):
            params, state = list(args[:n_p]), list(args[n_p:n_p + n_s])
            opt_state, (lr, x, y) = list(args[n_p + n_s:n_p + n_s + n_o]), args[-3:]

            def objective(*args):      # everything it reads is an argument: a nested trace sees no closures
                params, state, (x, y) = list(args[:n_p]), list(args[n_p:n_p + n_s]), args[-2:]
                logits, new_state = model.apply(params, state, x, training=True)
                return (loss(logits, y), logits, *new_state)

            (value, aux), grads = value_and_grad(objective, argnums=tuple(range(n_p)), has_aux=True)(
                *params, *state, x, y)
            new_params, new_opt_state = optimizer.update(params, list(grads), opt_state, lr=lr)
            return (value, aux[0], *new_params, *aux[1:], *new_opt_state)

        names = ([_identifier(n) for n in self.param_names] + [_identifier(n) for n in self.state_names]
                 + [_identifier(f"opt.{n}") for n in self.opt_names] + ["lr", "x", "y"])
        train_step.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in names])
        train_step.__name__ = "train_step"
        train_step.output_names = (["loss", "logits"] + [f"new_{n}" for n in names[:n_p + n_s + n_o]])
        carried = params + states + opt_state
        specs = [make_spec(a.shape, str(a.dtype)) for a in carried] + [make_spec((), "float32"), x_spec, y_spec]
        # input k (a parameter, a state, an optimizer state) is fed by output 2 + k (its new value)
        self.program = compile(train_step, *specs, backend=backend, carry={k: 2 + k for k in range(len(carried))},
                               autotune=autotune, replay=replay)
        self.program.param_positions = tuple(range(n_p))     # drawn as parameters
        self.program.load_state(carried)
        self._synced = True
        model.trained_by = self                # reading model.params syncs from the device (Layer)
        self.x_spec, self.y_spec, self.backend, self.autotune = x_spec, y_spec, backend, autotune
        self._eval = {}

    def __call__(self, x, y, lr=None):
        """One step on a batch: returns (loss, logits); parameters and states are updated."""
        lr = self.lr if lr is None else lr
        loss, logits = self.program.run([np.float32(lr), np.asarray(x), np.asarray(y)])
        self.steps += 1
        self._synced = False
        return float(loss), logits

    def _carried(self):
        """(parameters, model states, optimizer states), copied from the device."""
        carried, (n_p, n_s, _) = self.program.state(), self._sizes
        return carried[:n_p], carried[n_p:n_p + n_s], carried[n_p + n_s:]

    @property
    def params(self):
        """The parameters now (copied from the device)."""
        return self._carried()[0]

    @property
    def states(self):
        """The model's state now (batch norm's running statistics, dropout's seed)."""
        return self._carried()[1]

    @property
    def opt_state(self):
        """The optimizer's state now (moments, step count)."""
        return self._carried()[2]

    def sync(self):
        """Copy the parameters and states from the device into the model. Reading the model's
        parameters (`model(x)`, `model.parameters()`, `summary()`) does it when a step has run
        since; a layer inside the model, read on its own, sees them after a sync."""
        if not self._synced:
            self._synced = True
            params, states, _ = self._carried()
            self.model.set_parameters(params)
            self.model.set_states(states)
        return self.model

    def restore(self, params, states):
        """Put these parameters and model states back on the device (the optimizer's state
        stays): fit goes back to the best epoch's weights with it."""
        self.program.load_state([*params, *states, *self.opt_state])
        self._synced = False
        self.sync()

    def evaluate(self, x):
        """The model's logits in eval mode (batch norm's running statistics, no dropout): a
        second, inference-only program, compiled once per batch shape."""
        x = np.asarray(x)
        program = self._eval.get(x.shape)
        model = self.sync()
        params, states = [a for _, a in model.parameters()], [a for _, a in model.states()]
        if program is None:
            n_p = len(params)

            def predict(*args):
                logits, _ = model.apply(list(args[:n_p]), list(args[n_p:-1]), args[-1], training=False)
                return logits

            names = [_identifier(n) for n in self.param_names + self.state_names] + ["x"]
            predict.__signature__ = inspect.Signature(
                [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in names])
            specs = [make_spec(a.shape, str(a.dtype)) for a in params + states] + \
                [make_spec(x.shape, self.x_spec.dtype)]
            program = self._eval[x.shape] = compile(predict, *specs, backend=self.backend, autotune=self.autotune)
        return program.run([*params, *states, x])[0]


def compile_train_step(model, loss, optimizer, x_spec, y_spec, backend=None, lr=None, autotune=None, replay=None):
    """The whole training step of `model` under `loss` and `optimizer` as one compiled program
    (see the module docstring). The model must be built (`model.init(...)`). autotune, replay:
    as for `compile` (on a GPU both are on: tuned block sizes, the step replayed as a CUDA graph)."""
    if not model.parameters():
        raise ArgumentError(f"compile_train_step: {type(model).__name__} has no parameters; build it first "
                            "with model.init(seed, input_shape=...)")
    return TrainStep(model, loss, optimizer, x_spec, y_spec, backend=backend, lr=lr, autotune=autotune, replay=replay)


__all__ = ["TrainStep", "compile_train_step"]
