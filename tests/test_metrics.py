"""Classification metrics (runtime/training/metrics.py), checked against scikit-learn."""
import numpy as np
import pytest
import sklearn.metrics as skm

from ops.errors import ArgumentError, ShapeError
from runtime.training.metrics import accuracy, confusion_matrix, precision_recall_f1, report


def _draw(rng, classes=5, n=None):
    n = int(rng.integers(20, 200)) if n is None else n
    y = rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, classes, n))   # better than chance
    return pred, y


def test_accuracy(rng):
    pred, y = _draw(rng)
    assert accuracy(pred, y) == pytest.approx(skm.accuracy_score(y, pred))
    scores = rng.standard_normal((len(y), 5))
    assert accuracy(scores, y) == pytest.approx(skm.accuracy_score(y, scores.argmax(1)))   # logits


def test_confusion_matrix(rng):
    pred, y = _draw(rng)
    got = confusion_matrix(pred, y, 5)
    assert got.dtype == np.int64
    assert np.array_equal(got, skm.confusion_matrix(y, pred, labels=range(5)))
    assert np.array_equal(confusion_matrix([1, 1], [0, 0], 3), [[0, 2, 0], [0, 0, 0], [0, 0, 0]])  # rows: true


def test_precision_recall_f1(rng):
    pred, y = _draw(rng, classes=6)
    got = precision_recall_f1(pred, y, 6)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(6), zero_division=0)
    np.testing.assert_allclose(got.precision, p)
    np.testing.assert_allclose(got.recall, r)
    np.testing.assert_allclose(got.f1, f)
    assert np.array_equal(got.support, s)
    mp, mr, mf, _ = skm.precision_recall_fscore_support(y, pred, labels=range(6), average="macro", zero_division=0)
    assert (got.macro_precision, got.macro_recall, got.macro_f1) == pytest.approx((mp, mr, mf))


def test_zero_division_like_sklearn():
    # class 2 is never predicted (precision 0) and class 3 never present (recall 0)
    y, pred = np.array([0, 1, 2, 2, 0]), np.array([0, 1, 0, 1, 3])
    got = precision_recall_f1(pred, y, 4)
    for average in (None, "macro"):
        want = skm.precision_recall_fscore_support(y, pred, labels=range(4), average=average, zero_division=0)
        have = (got.precision, got.recall, got.f1) if average is None else \
            (got.macro_precision, got.macro_recall, got.macro_f1)
        np.testing.assert_allclose(np.array(have, dtype=float), np.array(want[:3], dtype=float))
    assert got.precision[2] == 0 and got.recall[3] == 0 and got.f1[3] == 0


def test_report(rng):
    pred, y = _draw(rng, classes=3, n=90)
    text = report(pred, y, 3, names=["cat", "dog", "emu"])
    lines = text.splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    scores = precision_recall_f1(pred, y, 3)
    for c, name in enumerate(["cat", "dog", "emu"]):
        row = next(line for line in lines if line.startswith(name)).split()
        assert [float(v) for v in row[1:4]] == pytest.approx(
            [scores.precision[c], scores.recall[c], scores.f1[c]], abs=5e-5)
        assert int(row[4]) == int(np.sum(y == c))
    acc_row = next(line for line in lines if line.startswith("accuracy")).split()
    assert float(acc_row[1]) == pytest.approx(skm.accuracy_score(y, pred), abs=5e-5) and acc_row[2] == "90"
    macro = next(line for line in lines if line.startswith("macro avg")).split()
    assert float(macro[4]) == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=5e-5)
    assert "\n0 " in "\n" + report(pred, y, 3)             # default names: the class numbers


def test_errors_name_the_values():
    with pytest.raises(ShapeError, match=r"pred \(3,\) and y \(2,\)"):
        accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ArgumentError, match=r"pred\[1\] = 7 is out of range"):
        confusion_matrix([0, 7], [0, 1], 3)
    with pytest.raises(ShapeError, match="scores for 4 classes"):
        confusion_matrix(np.zeros((2, 4)), [0, 1], 3)
    with pytest.raises(ArgumentError, match="2 names for 3 classes"):
        report([0, 1], [0, 1], 3, names=["a", "b"])
    with pytest.raises(ArgumentError, match="no samples"):
        accuracy([], [])
