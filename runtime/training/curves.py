"""Learning curves: `plot_learning_curves(history, "curves.svg")`.

`history` holds one value per epoch, e.g. {"loss": [...], "val_loss": [...], "accuracy":
[...], "val_accuracy": [...]}. The picture has two panels, loss and accuracy, each with the
training and the validation line, because the *gap* between the two is the lesson:

- both falling: still learning, train longer;
- training loss falling while the validation loss turns up: overfitting. The epoch with the
  best validation score (lowest val_loss, else highest val_accuracy) is marked on both panels:
  that is the model to keep (see loop.EarlyStopping and checkpoint.py);
- both flat and high: the model is too small or the learning rate is off.

Like the memory-plan picture (compiler/memory_plot.py), the figure is a bare
matplotlib Figure (no pyplot: no window, the caller's pyplot state is left alone), the file
is written atomically, and the same history gives the same bytes: the SVG ids are salted
with a fixed string and no date or software version is written into the file.
"""
from __future__ import annotations

import os

import numpy as np

from compiler.files import atomic_file
from compiler.memory_plot import _METADATA, FORMATS
from ops.errors import ArgumentError, ShapeError

# the series a panel draws: (training key, validation key), the first spelling found wins
_PANELS = (("loss", (("loss", "val_loss"),)),
           ("accuracy", (("accuracy", "val_accuracy"), ("acc", "val_acc"))))


def _series(history):
    """{panel: (train key or None, val key or None)} for the panels with any data."""
    panels = {}
    for panel, spellings in _PANELS:
        for train, val in spellings:
            keys = (train if train in history else None, val if val in history else None)
            if keys != (None, None):
                panels[panel] = keys
                break
    return panels


def best_epoch(history):
    """(epoch, key) of the best validation value: lowest val_loss, else highest val_accuracy
    (or val_acc); epochs count from 1. (None, None) when there is no finite validation value."""
    for key, pick in (("val_loss", np.nanargmin), ("val_accuracy", np.nanargmax), ("val_acc", np.nanargmax)):
        if key in history:
            values = np.asarray(history[key], dtype=np.float64)
            values = np.where(np.isfinite(values), values, np.nan)
            if values.size and not np.all(np.isnan(values)):
                return int(pick(values)) + 1, key
    return None, None


def _check(history):
    if not isinstance(history, dict):
        raise ArgumentError(f"history must be a dict of lists per epoch, got {type(history).__name__}",
                            op="plot_learning_curves")
    panels = _series(history)
    if not panels:
        raise ArgumentError(f"history has none of the keys loss, val_loss, accuracy, val_accuracy (acc, "
                            f"val_acc); it has {', '.join(map(repr, history)) or 'no keys'}",
                            op="plot_learning_curves")
    keys = [k for pair in panels.values() for k in pair if k is not None]
    lengths = {}
    for key in keys:
        values = np.asarray(history[key])
        if values.ndim != 1:
            raise ShapeError(f"history[{key!r}] must be a list of one number per epoch, got shape {values.shape}",
                             op="plot_learning_curves")
        try:
            values.astype(np.float64)
        except (TypeError, ValueError):
            raise ArgumentError(f"history[{key!r}] must hold numbers, got {list(history[key])[:5]!r}",
                                op="plot_learning_curves") from None
        lengths[key] = len(values)
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ShapeError(f"the series of history must have one value per epoch each, but their lengths "
                         f"differ ({listed})", op="plot_learning_curves")
    if not any(lengths.values()):
        raise ArgumentError("history has no epochs yet: every series is empty", op="plot_learning_curves")
    return panels


def plot_learning_curves(history, path=None, title=None):
    """Draw `history` (dict of per-epoch lists); write it to `path` (.svg, .png or .pdf)
    atomically if given; return the matplotlib Figure.

    The loss panel draws "loss" and "val_loss"; the accuracy panel "accuracy" and
    "val_accuracy" (or "acc" and "val_acc"); a panel with neither is left out. Every series
    must have the same number of epochs. Non-finite values (a diverged loss) leave gaps."""
    panels = _check(history)
    fmt = None
    if path is not None:
        path = os.fspath(path)
        fmt = os.path.splitext(path)[1].lower().lstrip(".")
        if fmt not in FORMATS:
            raise ArgumentError(f"cannot draw learning curves to {path!r}: the suffix must be one of "
                                f"{', '.join('.' + f for f in FORMATS)}", op="plot_learning_curves")

    import matplotlib  # here, not at the top: importing runtime stays fast

    with matplotlib.rc_context({"svg.hashsalt": "chainrule", "font.size": 9}):
        fig = _figure(history, panels, title)
        if path is not None:
            with atomic_file(path) as tmp:
                fig.savefig(tmp, format=fmt, metadata=_METADATA[fmt], dpi=120)
    return fig


def _figure(history, panels, title):
    from matplotlib.figure import Figure  # heavy: as above, only when drawing
    from matplotlib.ticker import MaxNLocator  # heavy: as above

    fig = Figure(figsize=(5.0 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    best, best_key = best_epoch(history)
    styles = {"train": {"color": "#1f77b4", "label": "training"},
              "val": {"color": "#d62728", "label": "validation"}}
    for ax, (panel, (train, val)) in zip(axes, panels.items()):
        for role, key in (("train", train), ("val", val)):
            if key is None:
                continue
            values = np.asarray(history[key], dtype=np.float64)
            epochs = np.arange(1, len(values) + 1)
            ax.plot(epochs, np.where(np.isfinite(values), values, np.nan), marker="o", markersize=3,
                    linewidth=1.5, **styles[role])
            if role == "val" and best is not None and np.isfinite(values[best - 1]):
                ax.plot([best], [values[best - 1]], marker="*", markersize=12, color="#d62728",
                        markeredgecolor="black", linestyle="none")
        if best is not None:
            ax.axvline(best, color="#555555", linestyle=":", linewidth=1,
                       label=f"best validation: epoch {best}")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(color="#dddddd", linewidth=0.5)
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, frameon=False)
    if title is None and best is not None:
        word = "lowest" if best_key == "val_loss" else "highest"
        value = float(np.asarray(history[best_key], dtype=np.float64)[best - 1])
        title = f"learning curves: best validation at epoch {best} ({word} {best_key} {value:.4g})"
    fig.suptitle(title or "learning curves", fontsize=11)
    return fig
