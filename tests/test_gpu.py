"""On a GPU: what only a GPU can check. The training step replayed as a CUDA graph equals the
same step under the interpreter, step after step; autotuning times real candidates, logs and
caches them. Without CUDA these tests are skipped (the CPU tests check the same recording
replayed launch by launch, tests/test_replay.py, and the tuner under the interpreter,
tests/test_autotune.py)."""
import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from ops import layers as L
from tests.helpers import nonzero, rel_error

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")


def lenet():
    """No bias before the batch norm (as in ResNet): its gradient is zero up to rounding, and
    Adam turns rounding noise into steps of lr either way, so it would differ from device to
    device while the loss agrees."""
    return L.Sequential(L.Conv2d(1, 6, 3, padding=1, bias=False), L.BatchNorm2d(6), L.ReLU(), L.MaxPool2d(2),
                        L.Conv2d(6, 16, 3, padding=1), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
                        L.Dense(64, 10), input_shape=(1, 8, 8)).init(0)


def test_the_step_replayed_as_a_cuda_graph_equals_the_interpreter(rng):
    gpu = C.compile_train_step(lenet(), O.cross_entropy, O.optim.Adam(1e-2), O.spec((32, 1, 8, 8)),
                               O.spec((32,), "int64"), backend="triton")
    cpu = C.compile_train_step(lenet(), O.cross_entropy, O.optim.Adam(1e-2), O.spec((32, 1, 8, 8)),
                               O.spec((32,), "int64"), backend="interpret")
    assert gpu.program.executor.replay and gpu.program.executor.target.device == "cuda"
    for _ in range(4):
        x, y = rng.uniform(0.1, 1.0, (32, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 32)
        (loss_g, logits_g), (loss_c, logits_c) = gpu(x, y), cpu(x, y)
        assert abs(loss_g - loss_c) < 1e-4 * abs(loss_c) and rel_error(logits_g, logits_c) < 1e-4
    assert gpu.program.executor.recording.graph is not None          # calls 2-4 were graph replays
    for a, b in zip(gpu.params + gpu.opt_state, cpu.params + cpu.opt_state):
        assert rel_error(a, b) < 1e-4


def test_autotuning_on_the_gpu_times_logs_and_caches(rng, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    a, b = nonzero(rng, (1024, 512), dtype=np.float32), nonzero(rng, (512, 768), dtype=np.float32)

    def f(a, b):
        return O.relu(a @ b)

    program = C.compile(f, O.spec(a.shape), O.spec(b.shape), backend="triton")
    (tuning,) = program.executor.tunings
    assert not tuning.cached and len(tuning.configs) > 2 and all(s is None or s > 0 for s in tuning.seconds)
    assert rel_error(program(a, b), np.maximum(a.astype(np.float64) @ b, 0)) < 1e-4
    assert "<- chosen" in program.executor.autotune_text()
    again = C.compile(f, O.spec(a.shape), O.spec(b.shape), backend="triton")
    assert again.executor.tunings[0].cached and again.executor.tunings[0].config == tuning.config
