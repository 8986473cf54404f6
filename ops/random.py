"""Counter-based random numbers, bit for bit the ones Triton's `tl.rand` makes.

Philox4x32-10 maps (seed, offset) to a number with no state. So the backward pass
regenerates a dropout mask from its seed instead of storing it, and the NumPy reference
draws exactly the numbers the generated kernels will.
"""
import numpy as np

_KEY_A, _KEY_B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_ROUND_A, _ROUND_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_MASK32 = np.uint64(0xFFFFFFFF)
_SCALE = np.float32(4.6566127342e-10)   # largest float such that (2**31 - 1) * scale < 1


def _umulhi(a, b):
    return (a * b) >> np.uint64(32)


def philox_uniform(seed: int, shape) -> np.ndarray:
    """U[0, 1) float32 of `shape`; element i (row-major) is tl.rand(seed, i)."""
    n = int(np.prod(shape, dtype=np.int64))
    c0 = np.arange(n, dtype=np.uint64) & _MASK32
    c1 = np.zeros_like(c0)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0, k1 = np.uint64(seed & 0xFFFFFFFF), np.uint64((seed >> 32) & 0xFFFFFFFF)
    for _ in range(10):
        prev_c0, prev_c2 = c0, c2
        c0 = _umulhi(_ROUND_B, prev_c2) ^ c1 ^ k0
        c2 = _umulhi(_ROUND_A, prev_c0) ^ c3 ^ k1
        c1 = (_ROUND_B * prev_c2) & _MASK32
        c3 = (_ROUND_A * prev_c0) & _MASK32
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    x = c0.astype(np.uint32).view(np.int32)
    x = np.where(x < 0, ~x, x)
    return (x.astype(np.float32) * _SCALE).reshape(shape)
