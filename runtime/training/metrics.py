"""Classification metrics in NumPy, for the training loop and the tutorials.

Accuracy alone hides what a classifier gets wrong: 90% on the digits can mean every class
at 90%, or one class never recognised. The confusion matrix shows which classes are taken
for which, and per-class precision / recall / F1 say it in numbers. They are written here in
a few lines each (rather than imported from scikit-learn, which the tests compare against)
so that a learner can read how each is defined; the conventions are scikit-learn's:

- confusion matrix: rows are the true class, columns the predicted one;
- a ratio with a zero denominator (a class never predicted, or never present) is 0, as with
  `zero_division=0`;
- macro averages are the plain mean over all `classes`, absent classes included.

`pred` may be predicted labels [N] or scores [N, C] (logits or probabilities): scores are
turned into labels with an argmax over the last axis.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ops.errors import ArgumentError, ShapeError

from .data import check_labels


def _labels(pred, y, op, classes=None):
    """(pred, y) as label arrays of one length: scores are argmaxed, labels checked."""
    pred, y = np.asarray(pred), np.asarray(y)
    if pred.ndim == y.ndim + 1:
        if classes is not None and pred.shape[-1] != classes:
            raise ShapeError(f"pred has scores for {pred.shape[-1]} classes (shape {pred.shape}), but "
                             f"classes={classes}", op=op)
        pred = np.argmax(pred, axis=-1)
    if pred.shape != y.shape:
        raise ShapeError(f"pred and y must have the same shape (or pred one more axis of class scores), "
                         f"got pred {pred.shape} and y {y.shape}", op=op)
    if y.size == 0:
        raise ArgumentError("no samples: the metric of 0 predictions is undefined", op=op)
    if classes is not None:
        check_labels(y, classes, "y")
        check_labels(pred, classes, "pred")
    return pred.reshape(-1), y.reshape(-1)


def _ratio(num, den):
    """num / den elementwise, 0 where den is 0."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def accuracy(pred, y):
    """The fraction of predictions equal to the labels, a float in [0, 1]."""
    pred, y = _labels(pred, y, "accuracy")
    return float(np.mean(pred == y))


def confusion_matrix(pred, y, classes):
    """[classes, classes] int64 counts: entry [i, j] is how many samples of true class i were
    predicted as class j (rows: true, columns: predicted, as in scikit-learn)."""
    pred, y = _labels(pred, y, "confusion_matrix", classes)
    counts = np.bincount(y.astype(np.int64) * classes + pred.astype(np.int64), minlength=classes * classes)
    return counts.reshape(classes, classes).astype(np.int64)


def confusion_text(pred, y, classes, names=None):
    """The confusion matrix as a text table: one row per true class, one column per predicted
    class, each cell a count."""
    matrix = confusion_matrix(pred, y, classes)
    names = [str(c) for c in range(classes)] if names is None else [str(n) for n in names]
    if len(names) != classes:
        raise ArgumentError(f"{len(names)} names for {classes} classes: {names!r}", op="confusion_text")
    width = max(len(str(int(matrix.max()))), *(len(n) for n in names))
    corner = "true \\ pred"
    first = max(len(corner), *(len(n) for n in names))
    lines = [f"{corner:<{first}}  " + " ".join(f"{n:>{width}}" for n in names)]
    lines += [f"{name:<{first}}  " + " ".join(f"{int(v):>{width}}" for v in row) for name, row in zip(names, matrix)]
    return "\n".join(lines) + "\n"


class Scores(NamedTuple):
    """Per-class arrays [classes] and their macro averages (plain means over the classes)."""
    precision: np.ndarray  # of the samples predicted as class c, the fraction that are c
    recall: np.ndarray     # of the samples of class c, the fraction predicted as c
    f1: np.ndarray         # harmonic mean of the two: 2 tp / (2 tp + fp + fn)
    support: np.ndarray    # how many samples of class c there are (int64)
    macro_precision: float
    macro_recall: float
    macro_f1: float


def precision_recall_f1(pred, y, classes):
    """Per-class precision, recall, F1 and support, and their macro averages: a `Scores`.

    A class never predicted has precision 0, a class absent from `y` recall 0, and F1 is 0
    when both are (scikit-learn's zero_division=0)."""
    matrix = confusion_matrix(pred, y, classes)
    tp = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * tp, predicted + support)           # 2 tp / (2 tp + fp + fn)
    return Scores(precision, recall, f1, support.astype(np.int64),
                  float(precision.mean()), float(recall.mean()), float(f1.mean()))


def report(pred, y, classes, names=None, digits=4):
    """A text table in the style of scikit-learn's classification_report.

    One row per class (precision, recall, f1, support), then the accuracy and the macro
    averages. `names` (one string per class) label the rows; by default the class numbers.
    """
    scores = precision_recall_f1(pred, y, classes)     # checks pred, y and classes
    if names is None:
        names = [str(c) for c in range(classes)]
    elif len(names) != classes:
        raise ArgumentError(f"{len(names)} names for {classes} classes: {list(names)!r}", op="report")
    total = int(scores.support.sum())
    acc = float(np.trace(confusion_matrix(pred, y, classes))) / total
    first = max(len("macro avg"), *(len(str(n)) for n in names))
    col = max(len("precision"), digits + 2)
    number = f"{{:>{col}.{digits}f}}"

    def row(name, p, r, f, s):
        cells = [number.format(v) if v is not None else " " * col for v in (p, r, f)]
        return f"{name:<{first}}  " + "  ".join(cells) + f"  {s:>{col}}"

    head = f"{'class':<{first}}  " + "  ".join(f"{h:>{col}}" for h in ("precision", "recall", "f1", "support"))
    lines = [head, "-" * len(head)]
    for c, name in enumerate(names):
        lines.append(row(str(name), scores.precision[c], scores.recall[c], scores.f1[c], int(scores.support[c])))
    lines.append("-" * len(head))
    lines.append(row("accuracy", None, None, acc, total))
    lines.append(row("macro avg", scores.macro_precision, scores.macro_recall, scores.macro_f1, total))
    return "\n".join(lines) + "\n"
