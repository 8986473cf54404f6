"""The training loop: what `chainrule train` and `fit` do with a compiled training step.

Keras' `fit` in a page: every epoch shuffles the training set into mini-batches, runs the
compiled step (forward, backward and optimizer update: one program, compiler/train_step.py) on
each, and then measures loss and accuracy on the validation set with the eval program. A
progress bar shows the running loss; the best epoch's weights are kept (and, with `out=`,
checkpointed atomically); early stopping ends the run when the validation loss stops
improving; a loss that becomes NaN or infinite stops it with a message naming the epoch and
the step. At the end the best weights are restored and the test set is measured.

Batches have one shape, so the step compiles once: the last, smaller batch of an epoch is
dropped (each epoch shuffles anew, so every example is still seen).

The loop's two guards live here too. `EarlyStopping`: the validation loss falls, flattens,
then rises as the model starts to fit the noise of its training set. Training on past that
point costs time and makes the model worse, so the loop stops once the validation value has
not improved for `patience` epochs, and the best epoch (`best_epoch`, the one to keep a
checkpoint of) is remembered.

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
import os
import sys
import time

import numpy as np

import compiler as C
import ops as O
from compiler.files import atomic_file
from ops.errors import ArgumentError, ChainruleError, ShapeError

from ..progress import Progress
from . import checkpoint, metrics
from .curves import plot_learning_curves
from .data import batches, check_labels, digits_split
from .zoo import RECONSTRUCTS, network

OPTIMIZERS = {"sgd": lambda lr: O.optim.SGD(lr=lr, momentum=0.9), "adam": lambda lr: O.optim.Adam(lr=lr),
              "rmsprop": lambda lr: O.optim.RMSprop(lr=lr)}


# -- the two guards: early stopping and a finite loss ------------------------------------------------

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


# -- the loop ------------------------------------------------------------------------------------------


def fit(model, data, epochs=10, batch_size=32, optimizer="adam", lr=None, loss=None, backend=None, seed=0,
        patience=None, out=None, reconstruct=False, schedule=None, log=print, progress=True):
    """Train `model` (ops.layers, built) on data = {"train": (x, y), "val": (x, y), "test": (x, y)}.

    optimizer: "adam" | "sgd" (momentum 0.9) | "rmsprop", or an O.optim optimizer; lr: its
    learning rate; schedule: epoch -> lr (O.optim.StepLR(...).lr), fed as an input, no
    recompile. reconstruct: the target is the input itself (an autoencoder, mean squared
    error). Returns {"history": per-epoch lists, "test_loss", "test_accuracy", "best_epoch",
    "seconds", "step"}."""
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ArgumentError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        optimizer = OPTIMIZERS[optimizer](lr if lr is not None else (1e-2 if optimizer != "sgd" else 0.05))
    x_train, y_train = data["train"]
    _check_shapes(model, data)
    classes = None if reconstruct else int(model.output_shape(x_train.shape[1:])[-1])
    if not reconstruct:
        for part, (_, y) in data.items():
            check_labels(y, classes, what=f"{part} labels")
    loss = loss or (_reconstruction_loss if reconstruct else O.cross_entropy)
    batch_size = min(batch_size, len(x_train))
    y_spec = O.spec((batch_size, *x_train.shape[1:])) if reconstruct else O.spec((batch_size,), "int64")
    step = C.compile_train_step(model, loss, optimizer, O.spec((batch_size, *x_train.shape[1:])), y_spec,
                                backend=backend)
    rng = np.random.default_rng(seed)
    history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    stopper = EarlyStopping(patience=patience) if patience else None
    best = (np.inf, None, None, 0)
    start = time.perf_counter()
    steps_per_epoch = len(x_train) // batch_size
    for epoch in range(1, epochs + 1):
        lr_now = schedule(epoch - 1) if schedule else step.lr
        bar = Progress(steps_per_epoch, desc=f"epoch {epoch}/{epochs}") if progress else None
        losses, correct, seen = [], 0, 0
        for k, (x, y) in enumerate(batches(x_train, y_train, batch_size, seed=rng, drop_last=True), 1):
            value, logits = step(x, x if reconstruct else y, lr=lr_now)
            check_finite(value, epoch, k, lr=lr_now)
            losses.append(value)
            if not reconstruct:
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
            if bar:
                bar.update(1, loss=float(np.mean(losses)), **({"acc": correct / seen} if seen else {}))
        if bar:
            bar.close()
        val_loss, val_acc = evaluate(step, *data["val"], loss, reconstruct)
        history["loss"].append(float(np.mean(losses)))
        history["accuracy"].append(correct / seen if seen else None)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
        accuracy = f"  accuracy {correct / seen:.4f}  val_accuracy {val_acc:.4f}" if seen else ""
        log(f"epoch {epoch:3d}/{epochs}  loss {history['loss'][-1]:.4f}  val_loss {val_loss:.4f}{accuracy}  "
            f"({time.perf_counter() - start:.1f} s)")
        if val_loss < best[0]:
            best = (val_loss, step.params, step.states, epoch)
            if out:
                _save_checkpoint(out, step, epoch, val_loss)
        if stopper and stopper.step(val_loss, epoch):
            log(f"early stopping: val_loss has not improved for {patience} epochs (best: epoch {stopper.best_epoch})")
            break
    if best[1] is not None:                      # back to the best epoch's weights
        step.restore(best[1], best[2])
    test_loss, test_acc = evaluate(step, *data["test"], loss, reconstruct)
    return {"history": history, "test_loss": test_loss, "test_accuracy": test_acc, "best_epoch": best[3],
            "seconds": time.perf_counter() - start, "step": step}


def _check_shapes(model, data):
    """Every part of the data set has examples of the shape the model was built for, and as
    many labels as examples."""
    want = tuple(getattr(model, "input_shape", None) or ())
    for part, (x, y) in data.items():
        if want and tuple(x.shape[1:]) != want:
            raise ShapeError(f"fit: the model was built for inputs of shape (None, {', '.join(map(str, want))}) but "
                             f"the {part} set's x has shape {x.shape}: reshape the data or build the model with "
                             f"input_shape={tuple(x.shape[1:])}", op="fit")
        if len(x) != len(y):
            raise ShapeError(f"fit: the {part} set has {len(x)} examples but {len(y)} labels", op="fit")


def _reconstruction_loss(output, target):
    return O.mse_loss(output, O.reshape(target, output.shape))


def evaluate(step, x, y, loss=None, reconstruct=False, batch=512):
    """(mean loss, accuracy) of the trained step's eval program on (x, y), in batches;
    accuracy is None for a reconstruction."""
    outputs = np.concatenate([step.evaluate(x[i:i + batch]) for i in range(0, len(x), batch)])
    if reconstruct:
        flat = x.reshape(len(x), -1)
        return float(np.mean((outputs.reshape(len(x), -1) - flat) ** 2)), None
    shifted = outputs - outputs.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean()), metrics.accuracy(outputs.argmax(1), y)


def _save_checkpoint(out, step, epoch, val_loss):
    arrays = {f"param/{n}": a for n, a in zip(step.param_names, step.params)}
    arrays.update({f"state/{n}": a for n, a in zip(step.state_names, step.states)})
    arrays.update({f"opt/{n}": a for n, a in zip(step.opt_names, step.opt_state)})
    checkpoint.save(os.path.join(out, "checkpoint.npz"), arrays, {"epoch": epoch, "val_loss": val_loss})


def train_command(model_name, epochs, batch_size, lr, optimizer, backend, seed, out, patience=None, log=print):
    """`chainrule train`: the zoo model (or path/to/file.py:function) on the digits; prints
    an epoch line each epoch and ends with `test accuracy: 0.xxxx`. With `out`, writes the
    learning curves, a classification report, the checkpoint, the graphs and the kernels."""
    model = network(model_name)
    image = True
    data = digits_split(seed=seed, image=image)
    model.init(seed, input_shape=data["train"][0].shape[1:])
    reconstruct = model_name in RECONSTRUCTS
    log(model.summary())
    if out:
        os.makedirs(out, exist_ok=True)
    result = fit(model, data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, backend=backend,
                 seed=seed, patience=patience, out=out, reconstruct=reconstruct, log=log,
                 progress=sys.stdout.isatty())
    step = result["step"]
    report = step.program.report()
    log(f"compiled step: {report['kernels']} kernels ({report['unfused_kernels']} unfused), "
        f"best epoch {result['best_epoch']}, {result['seconds']:.1f} s")
    if out:
        plot_learning_curves(result["history"], os.path.join(out, "learning_curves.png"))
        step.program.dump(os.path.join(out, "step"))
        if not reconstruct:
            x_test, y_test = data["test"]
            pred = step.evaluate(x_test).argmax(1)
            text = metrics.report(pred, y_test, 10)
            with atomic_file(os.path.join(out, "report.txt")) as tmp, open(tmp, "w") as f:
                f.write(text)
        log(f"wrote {out}: learning_curves.png, checkpoint.npz, step/ (graphs, kernels)"
            + ("" if reconstruct else ", report.txt"))
    if reconstruct:
        log(f"test reconstruction error (mse): {result['test_loss']:.4f}")
    else:
        log(f"test accuracy: {result['test_accuracy']:.4f}")
    return result
