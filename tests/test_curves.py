"""Learning curves (runtime/training/curves.py): panels, the best epoch, atomic and reproducible files."""
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from ops.errors import ArgumentError, ShapeError
from runtime.training.curves import best_epoch, plot_learning_curves

HISTORY = {"loss": [1.2, 0.8, 0.6, 0.5, 0.45], "val_loss": [1.3, 0.9, 0.7, 0.75, 0.8],
           "accuracy": [0.6, 0.75, 0.82, 0.86, 0.88], "val_accuracy": [0.55, 0.7, 0.8, 0.79, 0.78]}


def test_two_panels_and_the_best_epoch(tmp_path):
    path = tmp_path / "plots" / "curves.svg"
    fig = plot_learning_curves(HISTORY, path)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    for ax in fig.axes:
        labels = ax.get_legend_handles_labels()[1]
        assert labels == ["training", "validation", "best validation: epoch 3"]
    ET.parse(path)
    text = path.read_text()
    assert "best validation at epoch 3" in text
    assert os.listdir(path.parent) == ["curves.svg"]      # no temporary file left


def test_best_epoch():
    assert best_epoch(HISTORY) == (3, "val_loss")
    assert best_epoch({"val_accuracy": [0.5, 0.9, 0.8]}) == (2, "val_accuracy")
    assert best_epoch({"loss": [1.0], "val_loss": [float("nan"), 2.0, float("inf"), 1.5]}) == (4, "val_loss")
    assert best_epoch({"loss": [1.0, 0.5]}) == (None, None)


@pytest.mark.parametrize("suffix", ["svg", "png"])
def test_same_history_same_bytes(tmp_path, suffix):
    a, b = tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}"
    plot_learning_curves(HISTORY, a)
    plot_learning_curves(dict(HISTORY), b)
    assert a.read_bytes() == b.read_bytes()
    if suffix == "png":
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_only_and_diverged():
    fig = plot_learning_curves({"loss": [1.0, 0.5, float("nan")]})
    assert [ax.get_title() for ax in fig.axes] == ["loss"]
    fig = plot_learning_curves({"acc": [0.1, 0.2], "val_acc": [0.1, 0.3]})
    assert [ax.get_title() for ax in fig.axes] == ["accuracy"]
    assert "epoch 2" in fig.get_suptitle()


def test_errors(tmp_path):
    with pytest.raises(ShapeError, match=r"lengths differ \(loss: 3, val_loss: 2\)"):
        plot_learning_curves({"loss": [1, 2, 3], "val_loss": [1, 2]})
    with pytest.raises(ArgumentError, match="none of the keys.*'lr'"):
        plot_learning_curves({"lr": [0.1]})
    with pytest.raises(ArgumentError, match="curves.gif"):
        plot_learning_curves(HISTORY, tmp_path / "curves.gif")
    with pytest.raises(ArgumentError, match="no epochs"):
        plot_learning_curves({"loss": []})
    assert os.listdir(tmp_path) == []


def test_crash_while_saving_keeps_the_old_picture(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "curves.svg"
    plot_learning_curves(HISTORY, path)
    before = path.read_bytes()

    def crash(self, fname, **kwargs):
        with open(fname, "w") as f:
            f.write("<svg")
        raise RuntimeError("killed")

    monkeypatch.setattr(Figure, "savefig", crash)
    with pytest.raises(RuntimeError):
        plot_learning_curves({k: list(np.array(v) * 2) for k, v in HISTORY.items()}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["curves.svg"]
