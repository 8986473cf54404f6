"""The benchmarks' models and workloads: which network trains on which batches, and the two
training steps timed against each other, chainrule's and its torch twin's, each built from
the same initial weights.

`Workload` names a network (a zoo model, "resnet18" or "resnet18_cifar") with the shape of
one example and the batch size; `CPU_WORKLOADS` are the CPU suite's. `chainrule_step`
compiles a model's whole training step as `chainrule train` does; `torch_step` is the torch
twin's (runtime/training/twins.py), eager or through torch.compile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import compiler as C
import ops as O
from ops import layers as L

from ..training.loop import OPTIMIZERS
from ..training.zoo import network

SEED, OPTIMIZER, LR, CLASSES = 0, "adam", 1e-2, 10        # chainrule train's defaults
ZOO_MODELS = ("logreg", "mlp", "lenet", "resnet")
MODELS = (*ZOO_MODELS, "resnet18")
RESNET_STAGES = (64, 128, 256, 512)                       # benchmarks/compile_time.py's ResNet-18
RESNET_INPUT = (8, 3, 64, 64)
ROTATE = 4                                                # distinct batches cycled through on the CPU


@dataclass(frozen=True)
class Workload:
    """A model and the batches it trains on: `name` picks the network (make_network)."""
    name: str
    input_shape: tuple            # one example, without the batch dimension
    batch: int

    def build(self):
        """The network, built with the seed every side starts from."""
        return make_network(self.name).init(SEED, input_shape=self.input_shape)

    def batches(self, count=ROTATE):
        """`count` random batches (x uniform in [0, 1) like the digits, y random labels), for rotation."""
        rng = np.random.default_rng(SEED)
        return [(rng.uniform(0, 1, (self.batch, *self.input_shape)).astype(np.float32),
                 rng.integers(0, CLASSES, self.batch)) for _ in range(count)]


CPU_WORKLOADS = {**{name: Workload(name, (1, 8, 8), 64) for name in ZOO_MODELS},
                 "resnet18": Workload("resnet18", RESNET_INPUT[1:], RESNET_INPUT[0])}


def resnet18_network(cifar=False):
    """ResNet-18 as ops.layers: a 7x7/2 stem and 3x3/2 max pool (cifar: a 3x3/1 stem, no pool),
    4 stages x 2 basic blocks of 64/128/256/512 channels, batch norm, 1x1 convolutions on the
    skip where the shape changes, global average pool, a linear layer to 10 classes."""
    if cifar:
        layers = [L.Conv2d(3, 64, 3, padding=1, bias=False), L.BatchNorm2d(64), L.ReLU()]
    else:
        layers = [L.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), L.BatchNorm2d(64), L.ReLU(),
                  L.MaxPool2d(3, 2, 1)]
    channels = 64
    for stage, width in enumerate(RESNET_STAGES):
        for block in range(2):
            stride = 2 if block == 0 and stage > 0 else 1
            body = [L.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), L.BatchNorm2d(width),
                    L.ReLU(), L.Conv2d(width, width, 3, padding=1, bias=False), L.BatchNorm2d(width)]
            skip = None
            if stride != 1 or channels != width:
                skip = [L.Conv2d(channels, width, 1, stride=stride, bias=False), L.BatchNorm2d(width)]
            layers += [L.Residual(body, skip), L.ReLU()]
            channels = width
    return L.Sequential(*layers, L.GlobalAvgPool2d(), L.Dense(channels, CLASSES))


def make_network(name):
    """An unbuilt layer model: a zoo network, "resnet18" or "resnet18_cifar"."""
    if name.startswith("resnet18"):
        return resnet18_network(cifar=name == "resnet18_cifar")
    return network(name)


def chainrule_step(model, work, backend, **options):
    """The model's whole training step compiled as `chainrule train` compiles it: step(x, y).
    options: compile's autotune and replay (default: on for a GPU, off for the interpreter)."""
    return C.compile_train_step(model, O.cross_entropy, OPTIMIZERS[OPTIMIZER](LR),
                                O.spec((work.batch, *work.input_shape)), O.spec((work.batch,), "int64"),
                                backend=backend, **options)


def torch_step(model, device, compiled=False):
    """The torch twin's training step (NumPy batch in, loss out, as fit's loop calls chainrule's),
    in eager mode or through torch.compile (default mode; the optimizer step stays eager)."""
    import torch  # heavy: only a run that times torch imports it

    from ..training.twins import torch_loss, torch_optimizer, torch_train_step, torch_twin  # imports torch

    twin = torch_twin(model).to(device).train()
    forward = torch.compile(twin) if compiled else twin
    return torch_train_step(forward, torch_optimizer(OPTIMIZER, twin.parameters(), LR), torch_loss(), device)
