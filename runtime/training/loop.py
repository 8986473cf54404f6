"""The training loop: what `chainrule train` and `fit` do with a compiled training step.

Keras' `fit` in a page: every epoch shuffles the training set into mini-batches, runs the
compiled step (forward, backward and optimizer update: one program, compiler/train_step.py) on
each, and then measures loss and accuracy on the validation set with the eval program. A
progress bar shows the running loss; the best epoch's weights are kept (and, with `out=`,
checkpointed atomically, with what `resume=` needs to continue the run); early stopping ends
the run when the validation loss stops improving; a loss that becomes NaN or infinite stops
it with a message naming the epoch, the step and the batch's examples; Ctrl-C raises
TrainingInterrupted, which says which checkpoint survives. At the end the best weights are
restored and the test set is measured.

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


def check_finite(loss, epoch, step, lr=None, batch=None):
    """Return `loss` as a float (an array loss as a float64 array); raise NonFiniteLossError
    if it is (or holds) nan or inf.

    The message names the value, the epoch and step, the batch when given (`batch`: words
    saying which examples it held, see `_batch_words`), and what to try (including the
    learning rate `lr` when given)."""
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
    where = f" ({batch})" if batch else ""
    raise NonFiniteLossError(
        f"the loss became {what} at epoch {epoch}, step {step}{where}: {lr_hint}, check the inputs and labels "
        f"of this batch for nan/inf or out-of-range values, or clip the gradients")


def _batch_words(k, batch_size, size):
    """Which examples batch k (from 1) of an epoch held: positions in that epoch's shuffle."""
    first = (k - 1) * batch_size
    return f"batch {k}: examples {first}..{first + size - 1} of the shuffled training set"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`: where it stopped, and the checkpoint that survives it.

    `epoch` and `step`: the epoch and the step of that epoch that was running; `saved_epoch`:
    the epoch the checkpoint in `out` holds (None when nothing was saved). The checkpoint is
    written atomically, so it is whole whenever the interrupt came."""

    def __init__(self, epoch, step, saved_epoch, out):
        super().__init__(f"interrupted at epoch {epoch}, step {step}")
        self.epoch, self.step, self.saved_epoch, self.out = epoch, step, saved_epoch, out


# -- the loop ------------------------------------------------------------------------------------------


def fit(model, data, epochs=10, batch_size=32, optimizer="adam", lr=None, loss=None, backend=None, seed=0,
        patience=None, out=None, reconstruct=False, schedule=None, log=print, progress=True, resume=None,
        meta=None):
    """Train `model` (ops.layers, built) on data = {"train": (x, y), "val": (x, y), "test": (x, y)}.

    optimizer: "adam" | "sgd" (momentum 0.9) | "rmsprop", or an O.optim optimizer; lr: its
    learning rate; schedule: epoch -> lr (O.optim.StepLR(...).lr), fed as an input, no
    recompile. reconstruct: the target is the input itself (an autoencoder, mean squared
    error). out: a folder for the best epoch's checkpoint (its meta: `meta`, plus what a
    resume needs); resume: a checkpoint (arrays, meta) from such a folder, to continue after
    its epoch. Ctrl-C raises TrainingInterrupted. Returns {"history": per-epoch lists,
    "test_loss", "test_accuracy", "best_epoch", "seconds", "step"}."""
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
    if resume is not None:
        best = _resume(step, rng, history, stopper, *resume)
    meta = {**(meta or {}), "batch_size": batch_size, "seed": seed}
    start = time.perf_counter()
    steps_per_epoch = len(x_train) // batch_size
    epoch, running = best[3], 0                 # running: the step of the epoch now running
    try:
        for epoch in range(best[3] + 1, epochs + 1):
            lr_now = schedule(epoch - 1) if schedule else step.lr
            bar = Progress(steps_per_epoch, desc=f"epoch {epoch}/{epochs}") if progress else None
            losses, correct, seen = [], 0, 0
            for k, (x, y) in enumerate(batches(x_train, y_train, batch_size, seed=rng, drop_last=True), 1):
                running = k
                value, logits = step(x, x if reconstruct else y, lr=lr_now)
                check_finite(value, epoch, k, lr=lr_now, batch=_batch_words(k, batch_size, len(x)))
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
                    _save_checkpoint(out, step, epoch, val_loss, {**meta, "history": history,
                                                                  "rng": rng.bit_generator.state})
            if stopper and stopper.step(val_loss, epoch):
                log(f"early stopping: val_loss has not improved for {patience} epochs "
                    f"(best: epoch {stopper.best_epoch})")
                break
    except KeyboardInterrupt:
        saved = best[3] if out and best[1] is not None else None
        raise TrainingInterrupted(epoch, running, saved, out) from None
    if best[1] is not None:                      # back to the best epoch's weights
        step.restore(best[1], best[2])
    test_loss, test_acc = evaluate(step, *data["test"], loss, reconstruct)
    return {"history": history, "test_loss": test_loss, "test_accuracy": test_acc, "best_epoch": best[3],
            "seconds": time.perf_counter() - start, "step": step}


def _resume(step, rng, history, stopper, arrays, meta):
    """Load a checkpoint written by fit into the compiled step (parameters, model state,
    optimizer state), the shuffling generator and the history; returns fit's `best`. A
    checkpoint of another model or optimizer is refused, naming what differs."""
    expected = {f"param/{n}": a for n, a in zip(step.param_names, step.params)}
    expected.update({f"state/{n}": a for n, a in zip(step.state_names, step.states)})
    expected.update({f"opt/{n}": a for n, a in zip(step.opt_names, step.opt_state)})
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ArgumentError(f"the checkpoint was made by another model or optimizer: it lacks "
                            f"{', '.join(missing) or 'nothing'} and has {', '.join(extra) or 'nothing'} more",
                            op="fit(resume=...)")
    for name, want in expected.items():
        if arrays[name].shape != want.shape:
            raise ShapeError(f"the checkpoint's {name} has shape {arrays[name].shape} but this model's has "
                             f"{want.shape}: it was made by another model", op="fit(resume=...)")
    if "rng" not in meta or "history" not in meta:
        raise ArgumentError("the checkpoint holds no training progress (history, shuffling generator): it was "
                            "not written by fit", op="fit(resume=...)")
    params = [arrays[f"param/{n}"] for n in step.param_names]
    states = [arrays[f"state/{n}"] for n in step.state_names]
    step.program.load_state([*params, *states, *(arrays[f"opt/{n}"] for n in step.opt_names)])
    step.restore(params, states)                 # syncs the model (the optimizer state just loaded stays)
    rng.bit_generator.state = meta["rng"]
    for key in history:
        history[key].extend(meta["history"][key])
    epoch = int(meta["epoch"])
    if stopper:
        stopper.step(meta["val_loss"], epoch)
    return (float(meta["val_loss"]), params, states, epoch)


def training_step(model, batch_size, reconstruct=False, optimizer="adam", seed=0, backend=None, autotune=None):
    """The compiled training step `fit` would run for a layer model (built here for the 8x8
    digits unless it declares its input_shape): what `chainrule kernels` and `graph` show."""
    input_shape = tuple(getattr(model, "input_shape", None) or (1, 8, 8))
    model.init(seed, input_shape=input_shape)
    x_spec = O.spec((batch_size, *input_shape))
    y_spec = x_spec if reconstruct else O.spec((batch_size,), "int64")
    loss = _reconstruction_loss if reconstruct else O.cross_entropy
    return C.compile_train_step(model, loss, OPTIMIZERS[optimizer](1e-2), x_spec, y_spec, backend=backend,
                                autotune=autotune)


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


def _save_checkpoint(out, step, epoch, val_loss, meta):
    """The best epoch so far, with what a resume needs: the optimizer's state, the history,
    the shuffling generator's position and the run's settings (`meta`)."""
    arrays = {f"param/{n}": a for n, a in zip(step.param_names, step.params)}
    arrays.update({f"state/{n}": a for n, a in zip(step.state_names, step.states)})
    arrays.update({f"opt/{n}": a for n, a in zip(step.opt_names, step.opt_state)})
    checkpoint.save(os.path.join(out, "checkpoint.npz"), arrays, {**meta, "epoch": epoch, "val_loss": val_loss})


RUN_SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "seed", "patience")   # what a resume continues with


def train_command(model_name, epochs, batch_size, lr, optimizer, backend, seed, out, patience=None, log=print,
                  resume=None):
    """`chainrule train`: the zoo model (or path/to/file.py:function) on the digits; prints
    an epoch line each epoch and ends with `test accuracy: 0.xxxx`. With `out`, writes the
    learning curves, a classification report (with the confusion matrix), the checkpoint,
    the graphs and the kernels. resume: a checkpoint (arrays, meta) that an earlier
    `chainrule train` of this model wrote (see `load_resume`); training continues after its
    epoch."""
    model = network(model_name)
    image = True
    data = digits_split(seed=seed, image=image)
    model.init(seed, input_shape=data["train"][0].shape[1:])
    reconstruct = model_name in RECONSTRUCTS
    log(model.summary())
    if out:
        os.makedirs(out, exist_ok=True)
    if resume is not None:
        done = resume[1]["epoch"]
        if done >= epochs:
            raise ArgumentError(f"the checkpoint already holds epoch {done} of {epochs}: give --epochs above {done} "
                                f"to train on", op="train --resume")
        log(f"resuming after epoch {done} (of {epochs})")
    settings = {"model": model_name, "epochs": epochs, "lr": lr, "optimizer": optimizer, "patience": patience}
    result = fit(model, data, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, backend=backend,
                 seed=seed, patience=patience, out=out, reconstruct=reconstruct, log=log,
                 progress=sys.stdout.isatty(), resume=resume, meta=settings)
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
            with atomic_file(os.path.join(out, "report.txt")) as tmp, open(tmp, "w") as f:
                f.write(classification_text(pred, y_test, 10))
        log(f"wrote {out}: learning_curves.png, checkpoint.npz, step/ (graphs, kernels)"
            + ("" if reconstruct else ", report.txt"))
    if reconstruct:
        log(f"test reconstruction error (mse): {result['test_loss']:.4f}")
    else:
        log(f"test accuracy: {result['test_accuracy']:.4f}")
    return result


def load_resume(folder, model_name):
    """The checkpoint in `folder` that `chainrule train MODEL --out folder` wrote, checked to
    be this model's and to record the run's settings: (arrays, meta)."""
    path = os.path.join(folder, "checkpoint.npz")
    arrays, meta = checkpoint.load(path)
    missing = [key for key in ("model", "epoch", "rng", "history", *RUN_SETTINGS) if key not in meta]
    if missing:
        raise ArgumentError(f"{path} cannot be resumed: it does not record {', '.join(missing)} (it was not "
                            f"written by `chainrule train --out`)", op="train --resume")
    if meta["model"] != model_name:
        raise ArgumentError(f"{path} is a checkpoint of the model {meta['model']!r}, not {model_name!r}: "
                            f"resume with chainrule train {meta['model']} --resume {folder}", op="train --resume")
    return arrays, meta


def classification_text(pred, y, classes):
    """report.txt: the confusion matrix (rows: true class, columns: predicted), then
    precision, recall and F1 per class."""
    return f"confusion matrix (rows: true class, columns: predicted)\n\n{metrics.confusion_text(pred, y, classes)}" \
           f"\n{metrics.report(pred, y, classes)}"
