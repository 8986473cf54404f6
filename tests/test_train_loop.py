"""The training loop (runtime/training/loop.py) and `chainrule train`: a tiny set is learnt to 100%,
early stopping stops, the best epoch's checkpoint round-trips, a diverging run stops with a
message naming the epoch and the step, and bad labels are refused before anything runs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from ops.errors import ChainruleError
from ops import layers as L
from runtime.training import checkpoint
from runtime.training.data import blobs, split, two_moons
from runtime.training.loop import NonFiniteLossError, fit


def moons_data():
    x, y = two_moons(n=192, noise=0.05, seed=1)
    return split(x, y, fractions=(0.5, 0.25, 0.25), seed=0)


def small_mlp(seed=0):
    return L.Sequential(L.Dense(2, 16), L.Tanh(), L.Dense(16, 2), input_shape=(2,)).init(seed)


def test_a_small_mlp_learns_two_moons_to_full_training_accuracy():
    data = moons_data()
    model = small_mlp()
    result = fit(model, data, epochs=60, batch_size=32, optimizer="adam", lr=0.05, backend="reference",
                 log=lambda line: None, progress=False)
    x, y = data["train"]
    assert (model(x).argmax(1) == y).mean() == 1.0
    assert result["test_accuracy"] >= 0.95 and len(result["history"]["loss"]) == 60


def test_early_stopping_stops_when_the_validation_loss_stops_improving():
    data = moons_data()
    lines = []
    result = fit(small_mlp(), data, epochs=50, batch_size=32, lr=0.05, schedule=lambda epoch: 0.0, patience=2,
                 backend="reference", log=lines.append, progress=False)
    assert len(result["history"]["loss"]) == 3          # epoch 1 is the best; 2 more without improvement
    assert any(line.startswith("early stopping") for line in lines)


def test_the_best_epoch_is_checkpointed_and_restored(tmp_path):
    data = moons_data()
    model = small_mlp()
    result = fit(model, data, epochs=5, batch_size=32, lr=0.05, backend="reference", out=str(tmp_path),
                 log=lambda line: None, progress=False)
    arrays, meta = checkpoint.load(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == result["best_epoch"]
    for name, value in model.parameters():            # the model holds the best epoch's weights
        assert np.array_equal(arrays[f"param/{name}"], value)
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_a_diverging_run_stops_naming_the_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    import ops as O

    x, y = blobs(n=128, centers=3, seed=0)
    data = split(x, y, seed=0)
    model = L.Sequential(L.Dense(2, 3), input_shape=(2,)).init(0)

    def explosive(output, target):      # exp of the outputs: a large learning rate overflows it to inf
        return O.mean(O.exp(output)) + 0.0 * O.sum(target)
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+.*learning rate"):
        fit(model, data, epochs=20, batch_size=16, optimizer="sgd", lr=50.0, loss=explosive, backend="reference",
            out=str(tmp_path), log=lambda line: None, progress=False)
    if os.path.exists(tmp_path / "checkpoint.npz"):
        checkpoint.load(tmp_path / "checkpoint.npz")   # whatever was written is whole


def test_labels_out_of_range_are_refused_before_compiling():
    x, y = two_moons(n=64, seed=0)
    y = y.copy()
    y[5] = 7
    with pytest.raises(ChainruleError, match=r"labels\[\d+\] = 7 is out of range"):
        fit(small_mlp(), split(x, y, stratify=False), epochs=1, backend="reference", log=lambda line: None,
            progress=False)


def test_chainrule_train_logreg_runs_end_to_end_through_the_generated_kernels(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "train", "logreg", "--epochs", "1",
                             "--backend", "interpret", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("test accuracy: ") and 0.5 < float(last.split(": ")[1]) <= 1.0
    assert {"learning_curves.png", "checkpoint.npz", "report.txt", "step"} <= set(os.listdir(out))
    assert os.path.exists(out / "step" / "kernels")


def test_chainrule_train_refuses_an_unknown_model():
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "train", "nosuch", "--epochs", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown model 'nosuch'" in result.stderr


def test_data_of_another_shape_than_the_model_is_a_clear_error():
    x, y = blobs(n=60, centers=3, features=3, seed=0)
    with pytest.raises(ChainruleError, match=r"built for inputs of shape \(None, 2\).*train set's x has shape "
                                             r"\(\d+, 3\)"):
        fit(small_mlp(), split(x, y, seed=0), epochs=1, backend="reference", log=lambda line: None, progress=False)


def test_a_model_from_a_file_trains_through_the_command(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text("from ops import layers as L\n\n\ndef tiny():\n"
                    "    return L.Sequential(L.Flatten(), L.Dense(64, 10), input_shape=(1, 8, 8))\n\n\n"
                    "def nothing():\n    return 3\n")
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "train", f"{path}:tiny", "--epochs", "2",
                             "--backend", "reference"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "dense (Dense)" in result.stdout and float(result.stdout.split("test accuracy: ")[1]) > 0.5
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "train", f"{path}:nothing", "--epochs", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "nothing() returned 3" in result.stderr and "ops.layers" in result.stderr


def test_the_autoencoder_trains_and_reports_its_reconstruction_error():
    from runtime.training.loop import train_command

    lines = []
    result = train_command("autoencoder", 2, 64, None, "adam", "reference", 0, None, log=lines.append)
    assert lines[-1].startswith("test reconstruction error (mse): ")
    history = result["history"]["loss"]
    assert history[1] < history[0] and result["test_accuracy"] is None
