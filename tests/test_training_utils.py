"""Early stopping and the finite-loss guard (runtime/training/loop.py)."""
import math

import numpy as np
import pytest

from ops.errors import ArgumentError, ChainruleError
from runtime.training.loop import EarlyStopping, NonFiniteLossError, check_finite


def _run(stopper, values):
    """The 1-based epoch at which `stopper` says stop, or None."""
    for epoch, value in enumerate(values, start=1):
        if stopper.step(value):
            return epoch
    return None


def test_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopping(patience=3)
    assert _run(stopper, [1.0, 0.8, 0.7, 0.71, 0.72, 0.69, 0.75, 0.76, 0.8, 0.9]) == 9
    assert stopper.best == 0.69 and stopper.best_epoch == 6 and stopper.wait == 3 and stopper.stopped


def test_min_delta_and_mode_max():
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert _run(stopper, [1.0, 0.995, 0.99]) == 3            # 0.995 and 0.99 are not 0.01 better
    assert stopper.best == 1.0 and stopper.best_epoch == 1
    stopper = EarlyStopping(patience=2, mode="max")
    assert _run(stopper, [0.5, 0.7, 0.6, 0.8, 0.8, 0.79]) == 6
    assert (stopper.best, stopper.best_epoch) == (0.8, 4)


def test_improved_flag_nan_and_patience_zero():
    stopper = EarlyStopping(patience=0)
    assert stopper.best is None and stopper.best_epoch is None
    assert not stopper.step(np.float32(2.0)) and stopper.improved
    assert stopper.step(2.5) and not stopper.improved
    stopper = EarlyStopping(patience=2)
    assert not stopper.step(float("nan"))                    # nan never improves
    assert stopper.best is None and stopper.wait == 1
    assert not stopper.step(1.0, epoch=10) and stopper.best_epoch == 10


@pytest.mark.parametrize("kwargs, match", [({"patience": -1}, "patience must be an integer >= 0 .*got -1"),
                                           ({"min_delta": -0.1}, "min_delta must be a number >= 0, got -0.1"),
                                           ({"mode": "best"}, "mode must be 'min' .* got 'best'")])
def test_bad_settings(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        EarlyStopping(**kwargs)


def test_check_finite_passes_numbers_through():
    assert check_finite(np.float32(0.25), epoch=1, step=1) == 0.25
    assert isinstance(check_finite(np.array(1.5), 1, 1), float)


def test_check_finite_names_epoch_step_and_lr():
    with pytest.raises(NonFiniteLossError,
                       match=r"the loss became nan at epoch 3, step 17: lower the learning rate \(now 0.5\)") as info:
        check_finite(float("nan"), epoch=3, step=17, lr=0.5)
    assert isinstance(info.value, ChainruleError) and isinstance(info.value, FloatingPointError)
    with pytest.raises(NonFiniteLossError, match=r"became inf at epoch 1, step 2: lower the learning rate, check"):
        check_finite(np.float32(math.inf), 1, 2)
    with pytest.raises(NonFiniteLossError, match="became -inf"):
        check_finite(np.array([1.0, -np.inf]), 1, 2, lr=1e-3)
    with pytest.raises(ArgumentError, match="must be a number"):
        check_finite("high", 1, 1)
