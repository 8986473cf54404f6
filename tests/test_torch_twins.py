"""Torch twins (runtime/training/twins.py): each zoo model's torch twin computes what the model computes,
from the same weights, in evaluation and (batch norm) training mode; the optimizers match fit's;
torch_fit trains on the same batches as fit and ends where it ends."""
import numpy as np
import pytest
import torch

from ops.errors import ArgumentError
from ops import layers as L
from runtime.training.data import digits_split
from runtime.training.loop import fit
from runtime.training.twins import torch_fit, torch_optimizer, torch_twin
from runtime.training.zoo import networks

ZOO = list(networks())


def every_layer():
    """The layers the zoo does not use: strides, padding, AvgPool2d, LeakyReLU, Tanh, a
    Residual with a shortcut, LayerNorm, Dropout (the identity in evaluation), Softmax."""
    return L.Sequential(
        L.Conv2d(1, 4, 3, stride=2, padding=1), L.LeakyReLU(0.2), L.AvgPool2d(2, stride=1, padding=1),
        L.Residual([L.Conv2d(4, 6, 3, padding="same"), L.Tanh()], shortcut=L.Conv2d(4, 6, 1, bias=False)),
        L.MaxPool2d(3, stride=2, padding=1), L.Flatten(), L.LayerNorm(54), L.Dropout(0.3), L.Dense(54, 5),
        L.Softmax(dim=1), input_shape=(1, 8, 8))


def _float64(model):
    model.set_parameters([a.astype(np.float64) for _, a in model.parameters()])
    model.set_states([a.astype(np.float64) if a.dtype.kind == "f" else a for _, a in model.states()])   # not seeds
    return model


def _close(ours, theirs, rtol=1e-5):
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape
    assert np.linalg.norm(ours - theirs) <= rtol * np.linalg.norm(theirs)


@pytest.mark.parametrize("name", ZOO + ["every_layer"])
def test_twin_matches_the_model(name, rng):
    model = (every_layer() if name == "every_layer" else networks()[name]()).init(0)
    twin = torch_twin(model, dtype=torch.float64)
    _float64(model)
    x = rng.standard_normal((5, 1, 8, 8)) + 0.5
    _close(model(x), twin.eval()(torch.from_numpy(x)))
    if any(k.endswith("running_mean") for k in model.state_names()):   # batch norm: batch statistics, and
        _close(model(x, training=True), twin.train()(torch.from_numpy(x)))    # the running ones move alike
        theirs = twin.state_dict()
        for key, value in model.states():
            _close(value, theirs[key])
        _close(model(x), twin.eval()(torch.from_numpy(x)))


def test_twin_copies_the_weights():
    model = networks()["lenet"]().init(3)
    twin = torch_twin(model)
    ours = dict(model.parameters())
    assert set(ours) == {k for k, _ in twin.named_parameters()}
    for key, value in twin.named_parameters():
        assert value.dtype == torch.float32 and np.array_equal(value.detach().numpy(), ours[key])


def test_unsupported_layer_raises():
    class Square(L.Layer):
        kind = "square"

        def call(self, params, state, x, training):
            return x * x, state

    model = L.Sequential(L.Flatten(), Square(), input_shape=(1, 8, 8)).init(0)
    with pytest.raises(ArgumentError, match=r"square \(Square\)"):
        torch_twin(model)


def test_optimizers_match_fit():
    # one test, not three: the first torch optimizer imports torch._dynamo (seconds), once per worker
    expected = {"adam": (torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}),
                "sgd": (torch.optim.SGD, {"momentum": 0.9, "dampening": 0.0, "nesterov": False}),
                "rmsprop": (torch.optim.RMSprop, {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False})}
    for name, (kind, settings) in expected.items():
        opt = torch_optimizer(name, [torch.nn.Parameter(torch.ones(2))], lr=0.03)
        assert type(opt) is kind
        group = opt.param_groups[0]
        assert group["lr"] == 0.03 and group["weight_decay"] == 0.0
        assert {k: group[k] for k in settings} == settings
    with pytest.raises(ArgumentError, match="adagrad"):
        torch_optimizer("adagrad", [torch.nn.Parameter(torch.ones(2))], lr=0.03)


def test_torch_fit_follows_fit():
    """Same batches in the same order, same optimizer, same best epoch: the same run."""
    data = digits_split(seed=0, image=True)
    model = networks()["mlp"]().init(0)
    twin = torch_twin(model)
    ours = fit(model, data, epochs=2, batch_size=64, optimizer="adam", lr=1e-2, backend="reference", seed=0,
               log=lambda line: None, progress=False)
    theirs = torch_fit(twin, data, epochs=2, batch_size=64, optimizer="adam", lr=1e-2, seed=0)
    assert theirs["steps"] == ours["step"].steps
    np.testing.assert_allclose(theirs["history"]["val_loss"], ours["history"]["val_loss"], rtol=1e-4)
    assert theirs["best_epoch"] == ours["best_epoch"]
    assert theirs["test_accuracy"] == pytest.approx(ours["test_accuracy"], abs=1 / len(data["test"][1]))
