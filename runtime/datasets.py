"""Data sets that need no network: the 8x8 digits that ship inside scikit-learn."""
from __future__ import annotations

import numpy as np


def digits(seed=0, test_fraction=0.2, image=False):
    """The 1,797 handwritten digits: x scaled to [0, 1], y the class 0-9.

    Returns (x_train, y_train, x_test, y_test); x is [N, 64], or [N, 1, 8, 8] with image=True.
    The split is shuffled with `seed` and stratified by class.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        test[rng.choice(members, int(round(len(members) * test_fraction)), replace=False)] = True
    return x[~test], y[~test], x[test], y[test]
