"""Data sets and their plumbing (runtime/training/data.py): splits, synthetic sets, labels, batches."""
import numpy as np
import pytest

from ops.errors import ArgumentError, ChainruleError, DTypeError, ShapeError
from runtime.training.data import (
    batches,
    blobs,
    check_labels,
    digits,
    digits_split,
    split,
    two_moons,
)


def _rows(x):
    return {row.tobytes() for row in np.asarray(x).reshape(len(x), -1)}


def test_digits_unchanged():
    x_train, y_train, x_test, _ = digits(seed=0)
    assert x_train.shape == (1438, 64) and x_test.shape == (359, 64)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert digits(seed=0, image=True)[0].shape == (1438, 1, 8, 8)


def test_digits_split_sizes_classes_and_disjoint():
    parts = digits_split(seed=0)
    assert list(parts) == ["train", "val", "test"]
    sizes = {name: len(y) for name, (x, y) in parts.items()}
    assert sum(sizes.values()) == 1797
    assert abs(sizes["val"] - 0.15 * 1797) <= 10 and abs(sizes["test"] - 0.15 * 1797) <= 10
    for name, (x, y) in parts.items():
        assert x.shape == (sizes[name], 64) and x.dtype == np.float32 and y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))           # stratified: every class everywhere
    train, val, test = (_rows(parts[n][0]) for n in ("train", "val", "test"))
    # the digits contain a few duplicate images, so compare counts rather than set sizes
    assert len(train) + len(val) + len(test) >= 1790
    assert digits_split(seed=0, image=True)["val"][0].shape[1:] == (1, 8, 8)


def test_split_is_a_partition_and_reproducible(rng):
    n = int(rng.integers(50, 200))
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = rng.integers(0, 4, n)
    seed = int(rng.integers(1 << 30))
    a, b = split(x, y, seed=seed), split(x, y, seed=seed)
    ids = np.concatenate([a[name][0][:, 0] for name in ("train", "val", "test")]) // 2
    assert sorted(ids.astype(int).tolist()) == list(range(n))              # each sample once
    for name in a:
        assert np.array_equal(a[name][0], b[name][0]) and np.array_equal(a[name][1], b[name][1])
        assert np.array_equal(y[(a[name][0][:, 0] // 2).astype(int)], a[name][1])   # x and y stay paired
    other = split(x, y, seed=seed + 1)
    assert not np.array_equal(other["train"][0], a["train"][0])


def test_split_stratified_keeps_class_balance():
    y = np.repeat(np.arange(3), [100, 50, 10])
    x = np.arange(len(y), dtype=np.float32)[:, None]
    parts = split(x, y, fractions=(0.6, 0.2, 0.2), seed=3)
    assert [np.bincount(parts["val"][1], minlength=3).tolist(), np.bincount(parts["test"][1]).tolist()] == \
        [[20, 10, 2], [20, 10, 2]]
    assert not np.all(np.diff(parts["train"][1]) >= 0)             # shuffled, not grouped by class


def test_split_unstratified_and_empty_test():
    x, y = np.zeros((10, 3)), np.arange(10)
    parts = split(x, y, fractions=(0.8, 0.2, 0.0), seed=0, stratify=False)
    assert [len(parts[n][1]) for n in ("train", "val", "test")] == [8, 2, 0]
    assert parts["test"][0].shape == (0, 3)


@pytest.mark.parametrize("fractions, match", [((0.5, 0.5), "three numbers"), ((0.7, 0.2, 0.2), "add up to 1"),
                                              ((1.2, -0.1, -0.1), "val fraction must be >= 0")])
def test_split_bad_fractions(fractions, match):
    with pytest.raises(ArgumentError, match=match):
        split(np.zeros((4, 1)), np.zeros(4, np.int64), fractions=fractions)


def test_split_mismatched_lengths():
    with pytest.raises(ShapeError, match=r"x has 5 .* y has 4"):
        split(np.zeros((5, 2)), np.zeros(4))


def test_two_moons():
    x, y = two_moons(n=201, noise=0.0, seed=1)
    assert x.shape == (201, 2) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100, 101]
    upper, lower = x[y == 0], x[y == 1]
    assert np.allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-6)          # on the unit circle
    assert np.allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1.0, atol=1e-6)
    a, b = two_moons(seed=5), two_moons(seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(two_moons(seed=6)[0], a[0])
    with pytest.raises(ArgumentError, match="n must be an integer >= 2"):
        two_moons(n=1)


def test_blobs():
    x, y = blobs(n=300, centers=3, features=4, std=0.5, seed=2)
    assert x.shape == (300, 4) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100, 100, 100]
    means = np.stack([x[y == k].mean(axis=0) for k in range(3)])
    assert np.all(np.stack([x[y == k].std(axis=0) for k in range(3)]) < 0.7)
    # each point is nearer its own cluster's mean than any other (the centres are far apart)
    nearest = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert np.mean(nearest == y) > 0.95
    x2, y2 = blobs(n=10, centers=[[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]], std=0.0, seed=0)
    assert np.bincount(y2).tolist() == [4, 3, 3]
    assert np.array_equal(x2, np.array([[0, 0], [5, 5], [9, 0]], np.float32)[y2])
    with pytest.raises(ShapeError, match="centers"):
        blobs(centers=np.zeros(3))


def test_check_labels_ok():
    y = np.array([0, 3, 9])
    assert check_labels(y, 10) is y


def test_check_labels_out_of_range():
    with pytest.raises(ArgumentError, match=r"y\[2\] = 10 is out of range: labels must be in 0..9 .*2 of 5"):
        check_labels(np.array([0, 1, 10, 3, -1]), 10)
    with pytest.raises(ArgumentError, match=r"pred\[0\] = -1"):
        check_labels([-1, 0], 2, what="pred")


def test_check_labels_not_integers():
    with pytest.raises(DTypeError, match=r"y\[3\] = 2\.5 is not an integer class label"):
        check_labels(np.array([0.0, 1.0, 2.0, 2.5]), 10)
    with pytest.raises(DTypeError, match=r"labels\[1\] = nan"):
        check_labels(np.array([0.0, np.nan]), 3, what="labels")
    with pytest.raises(DTypeError, match=r"dtype float64: convert it with y.astype\(np.int64\)"):
        check_labels(np.array([0.0, 1.0]), 3)
    with pytest.raises(DTypeError, match="dtype <U1"):
        check_labels(np.array(["a", "b"]), 3)
    with pytest.raises(ArgumentError, match="classes must be the number of classes"):
        check_labels([0], 0)


def test_batches_in_order_and_last_batch():
    x, y = np.arange(10)[:, None] * 1.0, np.arange(10)
    got = list(batches(x, y, 4))
    assert [b[1].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(np.array_equal(bx[:, 0], by) for bx, by in got)
    assert [b[1].tolist() for b in batches(x, y, 4, drop_last=True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [len(b[1]) for b in batches(x, y, 20)] == [10]


def test_batches_shuffled(rng):
    x, y = np.arange(50, dtype=np.float32)[:, None], np.arange(50)
    gen = np.random.default_rng(int(rng.integers(1 << 30)))
    epoch1 = np.concatenate([b[1] for b in batches(x, y, 8, seed=gen)])
    epoch2 = np.concatenate([b[1] for b in batches(x, y, 8, seed=gen)])
    assert sorted(epoch1.tolist()) == list(range(50)) == sorted(epoch2.tolist())
    assert not np.array_equal(epoch1, epoch2)            # a Generator: a fresh order per epoch
    assert not np.array_equal(epoch1, y)
    fixed = [np.concatenate([b[1] for b in batches(x, y, 8, seed=7)]) for _ in range(2)]
    assert np.array_equal(*fixed)                        # an int: the same order every call
    for bx, by in batches(x, y, 8, seed=(7, 2)):
        assert np.array_equal(bx[:, 0], by)


def test_batches_errors_are_eager():
    with pytest.raises(ArgumentError, match="batch_size must be an integer >= 1, got 0"):
        batches(np.zeros((3, 1)), np.zeros(3), 0)        # no next(): raised at the call
    with pytest.raises(ArgumentError, match="got 2.5"):
        batches(np.zeros((3, 1)), np.zeros(3), 2.5)
    with pytest.raises(ShapeError, match=r"x has 3 \(shape \(3, 1\)\), y has 2"):
        batches(np.zeros((3, 1)), np.zeros(2), 2)
    assert issubclass(ShapeError, ChainruleError)
