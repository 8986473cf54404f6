"""Misuse: layers and models (issue 16, "inputs, labels and layers").

Freezing a layer (not built yet: an error, not a flag silently ignored), arrays of the wrong
shape or dtype stored into a model or loaded from a checkpoint (checked first, nothing
changed), and the (name, array) pairs of parameters() passed where apply takes arrays.
"""
import os

import numpy as np
import pytest

import compiler as C
from ops import layers as L
from ops.errors import ArgumentError
from runtime.training import checkpoint
from runtime.training.checkpoint import CheckpointError
from tests.helpers import nonzero, rel_error


def _model(rng):
    return L.Sequential([L.Dense(10, 64), L.ReLU(), L.Dense(64, 10), L.Dropout(0.5)],
                        input_shape=(10,)).init(int(rng.integers(1 << 30)))


def _snapshot(model):
    return [a.copy() for _, a in model.parameters()], [a.copy() for _, a in model.states()]


def _unchanged(model, snapshot):
    params, states = _snapshot(model)
    return (all(np.array_equal(a, b) for a, b in zip(params, snapshot[0]))
            and all(np.array_equal(a, b) for a, b in zip(states, snapshot[1])))


# -- freezing ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["layer", "model"])
def test_setting_trainable_is_an_error_until_freezing_is_built(rng, which):
    model = _model(rng)
    target = model[0] if which == "layer" else model
    with pytest.raises(ArgumentError) as err:
        target.trainable = False
    message = str(err.value)
    assert f"{target.name}.trainable = False: freezing layers is not supported yet" in message
    assert "argnums" in message                                     # what to do instead
    assert "test_layers.py:" in message and "target.trainable = False" in message
    assert target.trainable is True


def test_summary_claims_nothing_about_trainable_parameters(rng):
    model = _model(rng)
    text = model.summary()
    assert "Trainable params" not in text
    assert f"Total params: {model.num_parameters():,} (a training step trains all of them)" in text


# -- set_parameters / set_states ---------------------------------------------------------------------------------

def test_set_parameters_with_a_transposed_weight_changes_nothing(rng):
    model = _model(rng)
    before = _snapshot(model)
    arrays = [nonzero(rng, a.shape).astype(a.dtype) for a in before[0]]
    arrays[0] = arrays[0].T.copy()                                  # 10x64 where 64x10 is expected
    arrays[1] = arrays[1] + 1                                       # a good one, before the check fails
    with pytest.raises(ArgumentError) as err:
        model.set_parameters(arrays)
    assert ("parameter dense.weight must be float32 or float64 of shape (64, 10) (it is float32), got float32 of "
            "shape (10, 64); nothing was changed") in str(err.value)
    assert "test_layers.py:" in str(err.value)
    assert _unchanged(model, before)


@pytest.mark.parametrize("dtype", ["int64", "float16", "bool"])
def test_set_parameters_with_a_wrong_dtype_changes_nothing(rng, dtype):
    model = _model(rng)
    before = _snapshot(model)
    arrays = dict(model.parameters())
    arrays["dense_1.bias"] = nonzero(rng, (10,)).astype(dtype)
    with pytest.raises(ArgumentError, match=rf"dense_1.bias must be float32 or float64 of shape \(10,\) \(it is "
                                            rf"float32\), got {dtype}"):
        model.set_parameters(arrays)
    assert _unchanged(model, before)


def test_set_parameters_may_change_the_float_width(rng):
    """float64 parameters make a float64 model (gradient checks use it): a choice, not a mistake."""
    model = _model(rng)
    model.set_parameters([a.astype(np.float64) for _, a in model.parameters()])
    assert all(a.dtype == np.float64 for _, a in model.parameters())


def test_set_parameters_with_unknown_names_changes_nothing(rng):
    model = _model(rng)
    before = _snapshot(model)
    arrays = dict(model.parameters())
    arrays["dense.wieght"] = arrays.pop("dense.weight")
    with pytest.raises(ArgumentError, match="unknown parameter dense.wieght; missing parameter dense.weight"):
        model.set_parameters(arrays)
    assert _unchanged(model, before)


def test_set_states_checks_too(rng):
    model = _model(rng)
    before = _snapshot(model)
    with pytest.raises(ArgumentError, match=r"state array dropout.seed must be int32 or int64 of shape \(\) \(it is "
                                            r"int64\), got float64"):
        model.set_states([np.float64(3.0)])
    assert _unchanged(model, before)


def test_set_parameters_with_good_arrays_still_works(rng):
    model = _model(rng)
    arrays = [nonzero(rng, a.shape).astype(a.dtype) for _, a in model.parameters()]
    model.set_parameters(arrays)
    assert all(np.array_equal(a, b) for (_, a), b in zip(model.parameters(), arrays))


# -- checkpoints -------------------------------------------------------------------------------------------------

def _checkpoint_arrays(model):
    arrays = {f"param/{n}": a for n, a in model.parameters()}
    arrays.update({f"state/{n}": a for n, a in model.states()})
    return arrays


def test_a_checkpoint_loads_into_its_model(rng, tmp_path):
    source, model = _model(rng), _model(rng)
    path = checkpoint.save(tmp_path / "ck.npz", _checkpoint_arrays(source), {"epoch": 3})
    assert checkpoint.load_model(path, model) == {"epoch": 3}
    assert _unchanged(model, _snapshot(source))


def test_a_checkpoint_of_another_model_raises_and_changes_nothing(rng, tmp_path):
    other = L.Sequential([L.Dense(10, 32), L.ReLU(), L.Dense(32, 10), L.Dropout(0.5)], input_shape=(10,)).init(1)
    path = checkpoint.save(tmp_path / "other.npz", _checkpoint_arrays(other))
    model = _model(rng)
    before = _snapshot(model)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_model(path, model)
    assert str(tmp_path / "other.npz") in str(err.value)
    assert "dense.weight must be float32 or float64 of shape (64, 10) (it is float32), got float32 of shape (32, 10)" \
        in str(err.value)
    assert _unchanged(model, before)


def test_a_checkpoint_with_a_bad_state_changes_no_parameter_either(rng, tmp_path):
    source, model = _model(rng), _model(rng)
    arrays = _checkpoint_arrays(source)
    arrays["state/dropout.seed"] = np.float32(1.5)
    path = checkpoint.save(tmp_path / "ck.npz", arrays)
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match="dropout.seed must be int32 or int64"):
        checkpoint.load_model(path, model)
    assert _unchanged(model, before)


@pytest.mark.parametrize("damage", ["truncated at 30%", "truncated at 60%", "truncated at 90%", "bytes flipped"])
def test_a_damaged_checkpoint_raises_naming_the_file(rng, tmp_path, damage):
    source, model = _model(rng), _model(rng)
    path = checkpoint.save(tmp_path / "ck.npz", _checkpoint_arrays(source))
    data = bytearray(open(path, "rb").read())
    if damage == "bytes flipped":
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    else:
        data = data[:int(len(data) * int(damage[-3:-1]) / 100)]
    with open(path, "wb") as f:
        f.write(data)
    before = _snapshot(model)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_model(path, model)
    assert repr(os.fspath(path)) in str(err.value)
    assert _unchanged(model, before)


# -- apply takes arrays, not parameters()'s pairs ----------------------------------------------------------------

def test_apply_with_the_pairs_of_parameters_says_what_it_takes(rng):
    model = _model(rng)
    x = nonzero(rng, (4, 10)).astype(np.float32)

    def f(x):
        y, _ = model.apply(model.parameters(), [a for _, a in model.states()], x)
        return y

    with pytest.raises(ArgumentError) as err:
        C.jit(f)(x)
    message = str(err.value)
    assert ("got the (name, array) pairs parameters() returns: pass [a for _, a in model.parameters()] or "
            "dict(model.parameters())") in message
    assert "test_layers.py:" in message


def test_apply_takes_the_arrays_or_the_dict(rng):
    model = _model(rng)
    x = nonzero(rng, (4, 10)).astype(np.float32)
    states = [a for _, a in model.states()]
    by_list = C.jit(lambda x: model.apply([a for _, a in model.parameters()], states, x, training=False)[0])(x)
    by_dict = C.jit(lambda x: model.apply(dict(model.parameters()), states, x, training=False)[0])(x)
    assert np.array_equal(by_list, by_dict) and rel_error(by_list, model(x)) < 1e-6
