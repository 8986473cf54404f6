"""The model zoo: small models for the 8x8 digits, written as plain DSL functions.

A model is a loss function of (parameters..., x, y) and an initializer of its parameters.
`chainrule kernels lenet` compiles the training step (loss and gradients) of one of them.
A model of your own is `path/to/file.py:function`, where function() returns a `Model` or an
ops.layers model; `resolve` turns every MODEL argument of every subcommand into a model.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

import ops as O
from ops import layers as L
from ops.errors import ArgumentError
from ops.ir import mark_as_user_code

mark_as_user_code(__file__)        # graphs of these models point at the lines below


@dataclass
class Model:
    name: str
    loss: Callable                 # loss(*params, x, y) -> scalar
    init: Callable                 # init(rng) -> list of parameter arrays (float32)
    image: bool = False            # inputs [N, 1, 8, 8] (else [N, 64])
    classes: int = 10

    def specs(self, params, batch):
        x = O.spec((batch, 1, 8, 8) if self.image else (batch, 64))
        return [O.spec(p.shape) for p in params] + [x, O.spec((batch,), "int64")]


def he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def zeros(*shape):
    return np.zeros(shape, np.float32)


# -- logistic regression -------------------------------------------------------------------------

def logreg_loss(w, b, x, y):
    return O.cross_entropy(O.linear(x, w, b), y)


def logreg_init(rng):
    return [he(rng, (10, 64), 64) * 0.5, zeros(10)]


# -- multilayer perceptron ---------------------------------------------------------------------

def mlp_loss(w1, b1, w2, b2, w3, b3, x, y):
    h = O.relu(O.linear(x, w1, b1))
    h = O.relu(O.linear(h, w2, b2))
    return O.cross_entropy(O.linear(h, w3, b3), y)


def mlp_init(rng):
    return [he(rng, (128, 64), 64), zeros(128), he(rng, (64, 128), 128), zeros(64), he(rng, (10, 64), 64), zeros(10)]


# -- LeNet-style CNN -----------------------------------------------------------------------------

def lenet_loss(c1, cb1, c2, cb2, w1, b1, w2, b2, x, y):
    h = O.max_pool2d(O.relu(O.conv2d(x, c1, cb1, padding=1)), 2)       # [N, 6, 4, 4]
    h = O.max_pool2d(O.relu(O.conv2d(h, c2, cb2, padding=1)), 2)       # [N, 16, 2, 2]
    h = O.relu(O.linear(O.flatten(h, 1), w1, b1))
    return O.cross_entropy(O.linear(h, w2, b2), y)


def lenet_init(rng):
    return [he(rng, (6, 1, 3, 3), 9), zeros(6), he(rng, (16, 6, 3, 3), 54), zeros(16),
            he(rng, (84, 64), 64), zeros(84), he(rng, (10, 84), 84), zeros(10)]


# -- a small residual network with batch norm ------------------------------------------------------

def resnet_loss(stem, g0, b0, c1, g1, b1, c2, g2, b2, w, b, x, y):
    h = O.relu(O.batch_norm(O.conv2d(x, stem, padding=1), None, None, g0, b0, training=True))
    skip = h
    h = O.relu(O.batch_norm(O.conv2d(h, c1, padding=1), None, None, g1, b1, training=True))
    h = O.batch_norm(O.conv2d(h, c2, padding=1), None, None, g2, b2, training=True)
    h = O.relu(h + skip)                                                  # the residual connection
    h = O.flatten(O.adaptive_avg_pool2d(h, 1), 1)
    return O.cross_entropy(O.linear(h, w, b), y)


def resnet_init(rng, width=16):
    ones = np.ones(width, np.float32)
    return [he(rng, (width, 1, 3, 3), 9), ones, zeros(width),
            he(rng, (width, width, 3, 3), 9 * width), ones.copy(), zeros(width),
            he(rng, (width, width, 3, 3), 9 * width), ones.copy(), zeros(width),
            he(rng, (10, width), width), zeros(10)]


ZOO = {
    "logreg": Model("logreg", logreg_loss, logreg_init),
    "mlp": Model("mlp", mlp_loss, mlp_init),
    "lenet": Model("lenet", lenet_loss, lenet_init, image=True),
    "resnet": Model("resnet", resnet_loss, resnet_init, image=True),
}


def get(name):
    """A zoo model by name, or `path/to/file.py:function` returning a Model."""
    model = resolve(name)
    if not isinstance(model, Model):
        raise ArgumentError(f"{name} is an ops.layers model; this needs a runtime.training.zoo.Model "
                            f"(a loss function and an initializer)")
    return model


# -- the same models as layers: what `chainrule train` trains ----------------------------------------

def networks():
    """name -> a function building the zoo's layer models (ops.layers) for the 8x8 digits:
    what `chainrule train MODEL` trains, with the whole step (forward, backward, update)
    compiled into one program."""
    return {
        "logreg": lambda: L.Sequential(L.Flatten(), L.Dense(64, 10, init="xavier"), input_shape=(1, 8, 8)),
        "mlp": lambda: L.Sequential(L.Flatten(), L.Dense(64, 128), L.ReLU(), L.Dense(128, 64), L.ReLU(),
                                    L.Dense(64, 10), input_shape=(1, 8, 8)),
        "lenet": lambda: L.Sequential(L.Conv2d(1, 6, 3, padding=1), L.ReLU(), L.MaxPool2d(2),
                                      L.Conv2d(6, 16, 3, padding=1), L.ReLU(), L.MaxPool2d(2),
                                      L.Flatten(), L.Dense(64, 84), L.ReLU(), L.Dense(84, 10), input_shape=(1, 8, 8)),
        "resnet": lambda: L.Sequential(
            L.Conv2d(1, 16, 3, padding=1, bias=False), L.BatchNorm2d(16), L.ReLU(),
            L.Residual([L.Conv2d(16, 16, 3, padding=1, bias=False), L.BatchNorm2d(16), L.ReLU(),
                        L.Conv2d(16, 16, 3, padding=1, bias=False), L.BatchNorm2d(16)]),
            L.ReLU(), L.GlobalAvgPool2d(), L.Dense(16, 10), input_shape=(1, 8, 8)),
        "autoencoder": lambda: L.Sequential(L.Flatten(), L.Dense(64, 32), L.ReLU(), L.Dense(32, 8), L.ReLU(),
                                            L.Dense(8, 32), L.ReLU(), L.Dense(32, 64, init="xavier"), L.Sigmoid(),
                                            input_shape=(1, 8, 8)),
    }


RECONSTRUCTS = ("autoencoder",)     # trained to give back its input (mean squared error), not a class


def model_names():
    """Every zoo name a MODEL argument accepts, for the command's help and its errors."""
    return list(dict.fromkeys([*ZOO, *networks()]))


MODEL_FORMS = ("a zoo model ({names}) or path/to/file.py:function returning an ops.layers model "
               "(e.g. a Sequential) or a runtime.training.zoo.Model (a loss function and an initializer)")


def describe_models():
    """The MODEL forms in words: what every subcommand's help and error say."""
    return MODEL_FORMS.format(names=", ".join(model_names()))


def resolve(name, layers=False):
    """The one way a MODEL argument becomes a model, for every subcommand.

    A zoo name gives its Model (a loss function: what `kernels` and `graph` compile), or with
    `layers=True` its ops.layers network (what `train` trains; `autoencoder` has only that
    form); `path/to/file.py:function` gives what function() returns, a Model or an (unbuilt)
    ops.layers model."""
    if not isinstance(name, str) or not name:
        raise ArgumentError(f"a model is a name or path/to/file.py:function, got {name!r}")
    if name in ZOO and not layers:
        return ZOO[name]
    found = networks()
    if name in found:
        return found[name]()
    if ":" in name:
        return _from_file(name)
    raise ArgumentError(f"unknown model {name!r}: give {describe_models()}")


def network(name):
    """A zoo layer model by name (unbuilt), or `path/to/file.py:function` returning one."""
    model = resolve(name, layers=True)
    if not isinstance(model, L.Layer):
        raise ArgumentError(f"{name}() returned a runtime.training.zoo.Model (a loss function): `chainrule "
                            f"kernels` and `chainrule graph` compile it, but training needs the model's outputs "
                            f"(to measure accuracy and predict): return an ops.layers model (e.g. a Sequential)")
    return model


def _from_file(name):
    """What `function()` in a user's file returns (a Model or an ops.layers model). The file is
    the user's code: errors and graphs point at its lines."""
    path, function = name.rsplit(":", 1)
    if not path or not function.isidentifier():
        raise ArgumentError(f"unknown model {name!r}: give {describe_models()}")
    if not os.path.isfile(path):
        raise ArgumentError(f"model file {path!r} does not exist")
    mark_as_user_code(path)
    spec = importlib.util.spec_from_file_location(f"chainrule_user_model_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, function, None)):
        raise ArgumentError(f"{path} has no function {function!r}")
    model = getattr(module, function)()
    if not isinstance(model, (Model, L.Layer)):
        raise ArgumentError(f"{name}() returned {model!r}; it must return an ops.layers model (e.g. a "
                            f"Sequential) or a runtime.training.zoo.Model")
    return model
