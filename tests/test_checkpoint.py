"""Checkpoints (runtime/training/checkpoint.py): round trips, atomic writes, clear errors."""
import os

import numpy as np
import pytest

import runtime.training.checkpoint as ckpt
from ops.errors import ArgumentError, ChainruleError
from runtime.training.checkpoint import CheckpointError, CheckpointNotFoundError, load, save


def _arrays(rng):
    return {"w1": rng.standard_normal((3, 4)).astype(np.float32), "b1": rng.standard_normal(4),
            "step": np.int64(17), "mask": rng.random((2, 2, 2)) < 0.5,
            "half": rng.standard_normal(5).astype(np.float16), "labels": rng.integers(0, 9, 6).astype(np.int32),
            "empty": np.zeros((0, 3), np.float32)}


def test_round_trip(tmp_path, rng):
    arrays = _arrays(rng)
    meta = {"epoch": 3, "model": "lenet", "optimizer": {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999]},
            "best": None, "ok": True, "note": "naïve"}
    path = tmp_path / "run" / "ckpt.npz"
    assert save(path, arrays, meta) == str(path)
    got, got_meta = load(path)
    assert got_meta == meta
    assert list(got) == list(arrays)
    for name, array in arrays.items():
        assert got[name].dtype == np.asarray(array).dtype and got[name].shape == np.shape(array)
        assert np.array_equal(got[name], array)
    assert os.listdir(tmp_path / "run") == ["ckpt.npz"]
    with np.load(path) as plain:                        # an ordinary .npz: NumPy alone reads it
        assert np.array_equal(plain["w1"], arrays["w1"])


def test_numpy_values_in_meta_and_compression(tmp_path, rng):
    arrays = {"w": np.zeros((100, 100), np.float32)}
    save(tmp_path / "a.npz", arrays, {"loss": np.float32(0.5), "epoch": np.int64(2), "shape": np.array([1, 2])})
    save(tmp_path / "b.npz", arrays, {}, compress=True)
    assert load(tmp_path / "a.npz")[1] == {"loss": 0.5, "epoch": 2, "shape": [1, 2]}
    assert os.path.getsize(tmp_path / "b.npz") < os.path.getsize(tmp_path / "a.npz") / 10
    assert np.array_equal(load(tmp_path / "b.npz")[0]["w"], arrays["w"])


def test_same_state_same_bytes(tmp_path, rng):
    arrays = _arrays(rng)
    save(tmp_path / "a.npz", arrays, {"epoch": 1})
    save(tmp_path / "b.npz", arrays, {"epoch": 1})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_crash_while_writing_keeps_the_old_checkpoint(tmp_path, rng, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save(path, _arrays(rng), {"epoch": 1})
    before = path.read_bytes()
    write_array = np.lib.format.write_array
    written = []

    def crash_on_third(f, array, **kwargs):              # two arrays written, then the machine "dies"
        if len(written) == 2:
            f.write(b"\0" * 100)                         # half of the third array
            raise KeyboardInterrupt("killed")
        written.append(array)
        return write_array(f, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        save(path, {k: v + 1 for k, v in _arrays(rng).items() if k != "mask"}, {"epoch": 2})
    assert len(written) == 2
    assert path.read_bytes() == before                   # byte for byte the old checkpoint
    assert os.listdir(tmp_path) == ["ckpt.npz"]          # and no temporary file left
    monkeypatch.undo()
    assert load(path)[1] == {"epoch": 1}


def test_crash_before_the_rename(tmp_path, rng, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save(path, {"a": np.ones(3)}, {"epoch": 1})
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save(path, {"a": np.zeros(3)}, {"epoch": 2})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.npz"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at .*nothing.npz"):
        load(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError, match="does not exist either"):
        load(tmp_path / "no" / "such.npz")


def test_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "plain.npz", weights=np.ones(2))
    np.save(tmp_path / "one.npy", np.ones(2))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    save(tmp_path / "good.npz", {"a": np.ones(2)}, {})
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:100])
    cases = {"plain.npz": "an .npz file but not a chainrule checkpoint.*it holds weights",
             "one.npy": "a single .npy array", "notes.txt": "not an .npz \\(zip\\) file, it starts with b'hello'",
             "empty.npz": "it is empty", "cut.npz": "damaged .npz"}
    for name, match in cases.items():
        with pytest.raises(CheckpointError, match=match) as info:
            load(tmp_path / name)
        assert name in str(info.value) and isinstance(info.value, ChainruleError)


def test_bad_input_to_save(tmp_path):
    with pytest.raises(CheckpointError, match=r"meta\['when'\] = .* cannot be stored as JSON"):
        save(tmp_path / "x.npz", {"a": np.ones(1)}, {"when": object()})
    with pytest.raises(CheckpointError, match=r"arrays\['o'\] has dtype object"):
        save(tmp_path / "x.npz", {"o": np.array([{}, 1], dtype=object)}, {})
    with pytest.raises(ArgumentError, match="reserved"):
        save(tmp_path / "x.npz", {ckpt.META_KEY: np.ones(1)}, {})
    with pytest.raises(ArgumentError, match="non-empty strings, got 3"):
        save(tmp_path / "x.npz", {3: np.ones(1)}, {})
    assert os.listdir(tmp_path) == []
