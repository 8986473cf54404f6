"""C.compile_train_step: forward, backward and optimizer update in one compiled program give
the parameters torch gives after the same step (same initial weights, same batch)."""
import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from ops import layers as L


def small_model():
    # (no conv bias before batch norm: its gradient is 0 up to rounding, and Adam or RMSprop would
    # turn that rounding noise into full-size steps of either sign)
    return L.Sequential(L.Conv2d(1, 3, 3, padding=1, bias=False), L.BatchNorm2d(3), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
                        L.Dense(48, 5), input_shape=(1, 8, 8)).init(0)


def torch_model(model):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1, bias=False), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(48, 5)).double()
    values = dict(model.parameters())
    with torch.no_grad():
        for (name, p), ours in zip(net.named_parameters(), values.values()):
            p.copy_(torch.tensor(ours, dtype=torch.float64))
    return net


OPTIMIZERS = {
    "sgd_momentum": (lambda: O.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3)),
    "rmsprop": (lambda: O.optim.RMSprop(lr=1e-2),
                lambda ps: torch.optim.RMSprop(ps, lr=1e-2)),
    "adam_clipped": (lambda: O.optim.Adam(lr=1e-2, weight_decay=1e-2, max_norm=0.5),
                     lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_two_compiled_steps_equal_torch(name, rng):
    ours, theirs = OPTIMIZERS[name]
    model = small_model()
    net = torch_model(model)
    opt = theirs(list(net.parameters()))
    step = C.compile_train_step(model, O.cross_entropy, ours(), O.spec((6, 1, 8, 8)), O.spec((6,), "int64"),
                                backend="interpret")
    for _ in range(2):
        x = rng.uniform(0.1, 1.0, (6, 1, 8, 8)).astype(np.float32)
        y = rng.integers(0, 5, 6)
        loss, logits = step(x, y)
        opt.zero_grad()
        out = net(torch.tensor(x, dtype=torch.float64))
        want = torch.nn.functional.cross_entropy(out, torch.tensor(y))
        want.backward()
        if name == "adam_clipped":
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
        opt.step()
        assert abs(loss - want.item()) < 1e-5 * max(1.0, abs(want.item()))
        assert np.abs(logits - out.detach().numpy()).max() < 1e-4
    for (qualified, got), want in zip(model.parameters(), net.parameters()):
        assert np.abs(got - want.detach().numpy()).max() < 1e-4, qualified
    bn = net[1]
    states = dict(model.states())
    assert np.abs(states["batch_norm2d.running_mean"] - bn.running_mean.numpy()).max() < 1e-5
    assert np.abs(states["batch_norm2d.running_var"] - bn.running_var.numpy()).max() < 1e-5


def test_the_whole_step_is_a_few_fused_kernels_with_every_update_in_one_launch():
    model = L.Sequential(L.Flatten(), L.Dense(64, 16), L.ReLU(), L.Dense(16, 10), input_shape=(1, 8, 8)).init(0)
    step = C.compile_train_step(model, O.cross_entropy, O.optim.SGD(lr=0.1, momentum=0.9), O.spec((8, 1, 8, 8)),
                                O.spec((8,), "int64"), backend="interpret")
    report = step.program.report()
    assert report["kernels"] * 4 <= report["unfused_kernels"]
    updates = [k for k in step.program.schedule.kernels if k.family == "horizontal"]
    assert len(updates) == 1                       # the 4 parameters' momentum updates: one launch
    # the step differentiates while it is traced: its autodiff is timed as a pass of its own
    seconds = report["compile_seconds"]
    assert list(seconds) == ["trace", "autodiff", "simplify", "fuse", "lower", "codegen", "plan_memory", "load"]
    assert all(s > 0 for s in seconds.values())


def test_evaluate_uses_running_statistics_and_the_trained_weights(rng):
    model = small_model()
    step = C.compile_train_step(model, O.cross_entropy, O.optim.SGD(lr=0.1), O.spec((6, 1, 8, 8)),
                                O.spec((6,), "int64"), backend="reference")
    x = rng.uniform(0.1, 1.0, (6, 1, 8, 8)).astype(np.float32)
    step(x, rng.integers(0, 5, 6))
    logits = step.evaluate(x[:4])
    assert logits.shape == (4, 5)
    assert np.abs(logits - model(x[:4], training=False)).max() < 1e-5


def test_parameters_and_optimizer_state_stay_on_the_device_updated_in_place(rng):
    model = L.Sequential(L.Conv2d(1, 4, 3, padding=1), L.ReLU(), L.MaxPool2d(2), L.Flatten(), L.Dense(64, 10),
                         input_shape=(1, 8, 8)).init(0)
    step = C.compile_train_step(model, O.cross_entropy, O.optim.Adam(1e-2), O.spec((8, 1, 8, 8)),
                                O.spec((8,), "int64"), backend="interpret")
    updates = step.program.memory.updates
    assert len(updates) == 3 * 4 + 1                 # 4 parameters, 2 moments each, Adam's step count
    assert all(u.in_place for u in updates), [(u.name, u.why) for u in updates if not u.in_place]
    buffers = {id(t) for t in step.program.executor.carried.values()}
    before = [a.copy() for _, a in model.parameters()]
    for _ in range(2):
        step(rng.uniform(0.1, 1.0, (8, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 8))
    assert {id(t) for t in step.program.executor.carried.values()} == buffers   # the same memory, written over
    after = [a for _, a in model.parameters()]        # reading the model brings the new values from the device
    assert all(not np.allclose(a, b) for a, b in zip(after, before))
    assert all(np.array_equal(a, b) for a, b in zip(after, step.params))
