"""Helpers shared by the tests: random inputs that are never zero, and relative errors."""
import numpy as np


def nonzero(rng, shape, low=0.1, high=2.0, dtype=np.float64):
    """Values bounded away from zero, with random signs."""
    return (rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


def positive(rng, shape, low=0.1, high=2.0, dtype=np.float64):
    return rng.uniform(low, high, shape).astype(dtype)


def rel_error(got, want):
    """‖got − want‖ / ‖want‖ (absolute error when want is all zeros)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    scale = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / (scale if scale > 0 else 1.0))
