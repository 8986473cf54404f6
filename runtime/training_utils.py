"""Two guards for a training loop: stop when validation stops improving, and stop loudly when
the loss is no longer a number.

`EarlyStopping`: the validation loss falls, flattens, then rises as the model starts to fit
the noise of its training set. Training on past that point costs time and makes the model
worse, so the loop stops once the validation value has not improved for `patience` epochs,
and the best epoch (`best_epoch`, the one to keep a checkpoint of) is remembered.

    stopper = EarlyStopping(patience=5)
    for epoch in range(1, epochs + 1):
        ...
        if stopper.step(val_loss):
            break
        if stopper.improved:
            checkpoint.save("best.npz", params, {"epoch": epoch})

`check_finite`: once a loss is nan or inf, every gradient and then every parameter becomes
nan, and the loop goes on "training" a dead model, printing `loss nan` for hours. Checking
each step's loss stops it at the step where it happened, with what to try.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ops.errors import ArgumentError, ChainruleError

MODES = ("min", "max")


class NonFiniteLossError(ChainruleError, FloatingPointError):
    """The loss became nan or inf: training has diverged."""


class EarlyStopping:
    """Stop when the monitored value has not improved for `patience` epochs.

    mode="min" for a loss (lower is better), "max" for an accuracy. A value improves when it
    beats the best so far by more than `min_delta`. `step(value)` returns True when training
    should stop: after `patience` epochs in a row without improvement (patience=0: at the
    first one). nan never improves. Attributes: `best` (None before the first step),
    `best_epoch` (counted from 1, or as passed to `step`), `wait` (epochs since the last
    improvement), `improved` (whether the last step improved), `stopped`.
    """

    def __init__(self, patience=5, min_delta=0.0, mode="min"):
        if isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0:
            raise ArgumentError(f"patience must be an integer >= 0 (epochs without improvement), got {patience!r}",
                                op="EarlyStopping")
        if not isinstance(min_delta, numbers.Real) or not math.isfinite(min_delta) or min_delta < 0:
            raise ArgumentError(f"min_delta must be a number >= 0, got {min_delta!r}", op="EarlyStopping")
        if mode not in MODES:
            raise ArgumentError(f"mode must be 'min' (a loss) or 'max' (an accuracy), got {mode!r}",
                                op="EarlyStopping")
        self.patience, self.min_delta, self.mode = int(patience), float(min_delta), mode
        self.best = None
        self.best_epoch = None
        self.epoch = 0
        self.wait = 0
        self.improved = False
        self.stopped = False

    def _better(self, value):
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value, epoch=None):
        """Record this epoch's value; return True when training should stop."""
        try:
            value = float(np.asarray(value).reshape(()))
        except (TypeError, ValueError):
            raise ArgumentError(f"step() takes one number per epoch, got {value!r}", op="EarlyStopping") from None
        self.epoch = self.epoch + 1 if epoch is None else epoch
        self.improved = self._better(value)
        if self.improved:
            self.best, self.best_epoch, self.wait = value, self.epoch, 0
        else:
            self.wait += 1
        self.stopped = self.wait > 0 and self.wait >= self.patience
        return self.stopped

    def __repr__(self):
        return (f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, mode={self.mode!r}; "
                f"best {self.best} at epoch {self.best_epoch}, waited {self.wait})")


def check_finite(loss, epoch, step, lr=None):
    """Return `loss` as a float (an array loss as a float64 array); raise NonFiniteLossError
    if it is (or holds) nan or inf.

    The message names the value, the epoch and step, and what to try (including the learning
    rate `lr` when given)."""
    try:
        values = np.asarray(loss, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError(f"the loss must be a number, got {loss!r}", op="check_finite") from None
    if np.all(np.isfinite(values)):
        return float(values) if values.ndim == 0 else values
    bad = values[~np.isfinite(values)].reshape(-1)[0]
    what = "nan" if np.isnan(bad) else ("inf" if bad > 0 else "-inf")
    lr_hint = f"lower the learning rate (now {lr:g})" if isinstance(lr, numbers.Real) else (
        f"lower the learning rate (now {lr})" if lr is not None else "lower the learning rate")
    raise NonFiniteLossError(
        f"the loss became {what} at epoch {epoch}, step {step}: {lr_hint}, check the inputs and labels "
        f"of this batch for nan/inf or out-of-range values, or clip the gradients")
