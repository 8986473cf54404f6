"""Data sets that need no network, and the plumbing a training loop needs around them.

- `digits()` / `digits_split()`: the 1,797 8x8 handwritten digits that ship inside
  scikit-learn, as a train/test or a train/val/test split;
- `two_moons()` / `blobs()`: tiny synthetic sets to watch a model learn in seconds. They are
  written here with NumPy rather than taken from `sklearn.datasets`, so that one seed gives
  the same points whatever scikit-learn version is installed (tests and tutorials pin numbers);
- `split()`: shuffle and cut any (x, y) into train/val/test, stratified by class so that a
  rare class is not missing from the validation set by bad luck;
- `check_labels()`: labels that are not classes 0..C-1 make a cross-entropy read out of
  bounds or silently learn nonsense, so they are caught up front, naming the first bad one;
- `batches()`: minibatches for one epoch, freshly shuffled each epoch.

x is float32 and y int64 throughout: the dtypes the compiled losses are traced with.
"""
from __future__ import annotations

import numbers

import numpy as np

from ops.errors import ArgumentError, DTypeError, ShapeError

SPLITS = ("train", "val", "test")


def _load_digits(image):
    from sklearn.datasets import load_digits  # heavy: scikit-learn loads only when the digits are asked for

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    if image:
        x = x.reshape(-1, 1, 8, 8)
    return x, y


def digits(seed=0, test_fraction=0.2, image=False):
    """The 1,797 handwritten digits: x scaled to [0, 1], y the class 0-9.

    Returns (x_train, y_train, x_test, y_test); x is [N, 64], or [N, 1, 8, 8] with image=True.
    The split is shuffled with `seed` and stratified by class.
    """
    x, y = _load_digits(image)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        test[rng.choice(members, int(round(len(members) * test_fraction)), replace=False)] = True
    return x[~test], y[~test], x[test], y[test]


def digits_split(seed=0, image=False, fractions=(0.7, 0.15, 0.15)):
    """The 1,797 digits as {"train": (x, y), "val": (x, y), "test": (x, y)}, see `split`.

    x is [N, 64] float32 in [0, 1] (or [N, 1, 8, 8] with image=True), y int64 in 0-9.
    """
    x, y = _load_digits(image)
    return split(x, y, fractions=fractions, seed=seed, stratify=True)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_fractions(fractions):
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ArgumentError(f"fractions must be three numbers (train, val, test), got {fractions!r}",
                            op="split") from None
    if len(values) != 3:
        raise ArgumentError(f"fractions must be three numbers (train, val, test), got {len(values)}: "
                            f"{fractions!r}", op="split")
    for name, value in zip(SPLITS, values):
        if not (np.isfinite(value) and value >= 0):
            raise ArgumentError(f"the {name} fraction must be >= 0, got {value!r}", op="split")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ArgumentError(f"fractions must add up to 1, got {fractions!r} (sum {sum(values):.6g})",
                            op="split")
    return values


def _counts(n, fractions):
    """How many of n items each split gets: n * fraction rounded so that they add up to n
    (largest remainders first; on a tie the earlier split, train before val before test)."""
    exact = [n * f for f in fractions]
    counts = [int(np.floor(e)) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:n - sum(counts)]:
        counts[i] += 1
    return counts


def _check_pair(x, y, op):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ShapeError(f"x and y must be arrays of samples, got shapes {x.shape} and {y.shape}", op=op)
    if len(x) != len(y):
        raise ShapeError(f"x and y must have as many samples: x has {len(x)} (shape {x.shape}), "
                         f"y has {len(y)} (shape {y.shape})", op=op)
    return x, y


def split(x, y, fractions=(0.7, 0.15, 0.15), seed=0, stratify=True):
    """Shuffle (x, y) with `seed` and cut it into {"train": (x, y), "val": (x, y), "test": (x, y)}.

    `fractions` (train, val, test) add up to 1; a fraction may be 0 (an empty split). The
    sizes are n * fraction, rounded so that every sample lands in exactly one split. With
    `stratify`, each class is cut in those fractions on its own, so every split has (about)
    the class balance of the whole set; the samples of each split are then shuffled.
    `seed` is anything `np.random.default_rng` takes (an int, or a Generator).
    """
    x, y = _check_pair(x, y, "split")
    fractions = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    parts = [[], [], []]
    groups = [np.flatnonzero(y == label) for label in np.unique(y)] if stratify else [np.arange(len(y))]
    for members in groups:
        members = rng.permutation(members)
        start = 0
        for part, count in zip(parts, _counts(len(members), fractions)):
            part.append(members[start:start + count])
            start += count
    result = {}
    for name, part in zip(SPLITS, parts):
        index = rng.permutation(np.concatenate(part)) if stratify else np.concatenate(part)
        result[name] = (x[index], y[index])
    return result


def two_moons(n=200, noise=0.1, seed=0):
    """Two interleaving half circles in 2-D: x [n, 2] float32, y [n] int64 (0 upper, 1 lower).

    Not separable by a line: a linear model gets about 85%, a small MLP about 100%. Points are
    spread evenly along each moon (n // 2 on the upper one), jittered by Gaussian noise of
    standard deviation `noise`, and shuffled with `seed`. Same construction as
    sklearn.datasets.make_moons, but with our own generator: stable across versions.
    """
    if not _is_int(n) or n < 2:
        raise ArgumentError(f"n must be an integer >= 2 (one point per moon at least), got {n!r}", op="two_moons")
    if not (np.isfinite(noise) and noise >= 0):
        raise ArgumentError(f"noise must be >= 0, got {noise!r}", op="two_moons")
    rng = np.random.default_rng(seed)
    upper, lower = n // 2, n - n // 2
    t_upper, t_lower = np.linspace(0, np.pi, upper), np.linspace(0, np.pi, lower)
    x = np.concatenate([np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1),
                        np.stack([1 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1)])
    y = np.concatenate([np.zeros(upper, np.int64), np.ones(lower, np.int64)])
    x = x + noise * rng.standard_normal(x.shape)
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order]


def blobs(n=300, centers=3, features=2, std=1.0, seed=0):
    """Gaussian clusters: x [n, features] float32, y [n] int64, the index of the cluster.

    `centers` is a count (the centres are drawn uniformly in [-10, 10]^features with `seed`)
    or an array [k, features] of centres. Each cluster gets n // k points (the first n % k
    clusters one more), Gaussian around its centre with standard deviation `std`; the points
    are shuffled with `seed`.
    """
    rng = np.random.default_rng(seed)
    if not _is_int(n) or n < 1:
        raise ArgumentError(f"n must be an integer >= 1, got {n!r}", op="blobs")
    if not (np.isfinite(std) and std >= 0):
        raise ArgumentError(f"std must be >= 0, got {std!r}", op="blobs")
    if _is_int(centers):
        if centers < 1:
            raise ArgumentError(f"centers must be >= 1, got {centers}", op="blobs")
        if not _is_int(features) or features < 1:
            raise ArgumentError(f"features must be an integer >= 1, got {features!r}", op="blobs")
        means = rng.uniform(-10.0, 10.0, (centers, features))
    else:
        means = np.asarray(centers, dtype=np.float64)
        if means.ndim != 2 or len(means) < 1:
            raise ShapeError(f"centers must be a count or an array [k, features] of centres, got shape "
                             f"{means.shape}", op="blobs")
    k = len(means)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    y = np.repeat(np.arange(k, dtype=np.int64), sizes)
    x = means[y] + std * rng.standard_normal((n, means.shape[1]))
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order]


def _where(index):
    return f"[{index[0]}]" if len(index) == 1 else f"[{', '.join(str(int(i)) for i in index)}]"


def check_labels(y, classes, what="y"):
    """Check that `y` holds integer class labels in 0..classes-1; return it as an array.

    Raises DTypeError for labels that are not integers (naming the first non-integer value
    and its index) and ArgumentError for labels out of range (naming the first one, its index
    and how many there are). `what` names the array in the messages ("y", "pred", ...).
    """
    if not _is_int(classes) or classes < 1:
        raise ArgumentError(f"classes must be the number of classes, an integer >= 1, got {classes!r}",
                            op="check_labels")
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        if y.dtype.kind == "f":
            fractional = ~np.isfinite(y) | (y != np.round(y))
            if fractional.any():
                index = np.unravel_index(int(np.argmax(fractional)), y.shape) if y.ndim else ()
                value = (y[index] if y.ndim else y).item()
                raise DTypeError(f"{what}{_where(index) if y.ndim else ''} = {value!r} is not an integer "
                                 f"class label ({what} has dtype {y.dtype}; {int(fractional.sum())} of "
                                 f"{y.size} labels are not whole numbers)", op="check_labels")
        raise DTypeError(f"{what} must hold integer class labels, got dtype {y.dtype}: convert it with "
                         f"{what}.astype(np.int64)", op="check_labels")
    bad = (y < 0) | (y >= classes)
    if bad.any():
        index = np.unravel_index(int(np.argmax(bad)), y.shape) if y.ndim else ()
        value = int(y[index]) if y.ndim else int(y)
        raise ArgumentError(f"{what}{_where(index) if y.ndim else ''} = {value} is out of range: labels "
                            f"must be in 0..{classes - 1} for classes={classes} ({int(bad.sum())} of "
                            f"{y.size} labels are out of range, from {int(y.min())} to {int(y.max())})",
                            op="check_labels")
    return y


def batches(x, y, batch_size, seed=None, drop_last=False):
    """Minibatches (x_batch, y_batch) covering (x, y) once: one epoch.

    Without `seed`, in order (the batches are views, no copy). With `seed`, in a random order:
    pass a `np.random.Generator` to get a fresh permutation on every call (every epoch) from
    one stream, or an int / a sequence such as `(seed, epoch)` for an order fixed by it (an
    int alone gives the same order on every call). The last batch is smaller when batch_size
    does not divide the length, unless `drop_last` leaves it out.

    The arguments are checked and the permutation is drawn when `batches` is called, not when
    the first batch is asked for.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ArgumentError(f"batch_size must be an integer >= 1, got {batch_size!r}", op="batches")
    x, y = _check_pair(x, y, "batches")
    n = len(x)
    order = None if seed is None else np.random.default_rng(seed).permutation(n)
    stop = n - n % batch_size if drop_last else n

    def generate():
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, stop)
            if order is None:
                yield x[start:end], y[start:end]
            else:
                index = order[start:end]
                yield x[index], y[index]

    return generate()
