"""Torch twins of chainrule models: the same network as a `torch.nn.Module`, from the same weights.

    from runtime.training.twins import torch_twin
    from runtime.training.zoo import network
    model = network("lenet").init(0)
    twin = torch_twin(model)                    # nn.Sequential, float32, same initial weights
    opt = torch_optimizer("adam", twin.parameters(), lr=1e-2)

The benchmarks train a model with chainrule and its twin with torch, from the same start,
to compare accuracy and time. `chainrule bench` (runtime/bench/) times both, so the twins
live in the installed package.

Each `ops.layers` layer maps to its torch module with the same arguments; the twin's
submodules carry our layer names, so its `state_dict()` keys are our qualified names
("conv2d.weight", "residual.batch_norm2d_1.running_mean"), plus torch's
`num_batches_tracked` counters. Conventions that match without conversion (checked against
ops/layers.py): Dense's weight is [out, in] like nn.Linear's; batch norm moves its running
statistics as new = (1 - momentum) * old + momentum * batch with the unbiased batch variance,
torch's rule and default momentum 0.1. One difference: Dropout's masks come from our Philox
stream, torch's from its own generator, so a twin with Dropout draws other masks (the same
distribution). A layer with no torch counterpart here raises an ArgumentError naming it.

`torch_optimizer` builds the torch optimizer of fit's optimizer names, and `torch_fit` is
fit's loop in torch eager (same batches in the same order, best validation epoch kept).
"""
from __future__ import annotations

import copy
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import ops as O
from ops.errors import ArgumentError
from ops import layers as L
from .data import batches
from .loop import OPTIMIZERS


class GlobalAvgPool2d(nn.Module):
    """[N, C, H, W] -> [N, C]: the mean over H and W (our GlobalAvgPool2d)."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class Residual(nn.Module):
    """block(x) + shortcut(x), the shortcut the identity when empty. The layers are direct
    submodules under their own names (as in our Residual's qualified names); `block` and
    `shortcut` list which is which, in order."""

    def __init__(self, block, shortcut):
        super().__init__()
        for name, module in list(block.items()) + list(shortcut.items()):
            self.add_module(name, module)
        self.block, self.shortcut = list(block), list(shortcut)

    def forward(self, x):
        y = x
        for name in self.block:
            y = getattr(self, name)(y)
        s = x
        for name in self.shortcut:
            s = getattr(self, name)(s)
        return y + s


def _children(layers):
    return OrderedDict((layer.name, _twin(layer)) for layer in layers)


def _twin(layer):
    """The torch module of one layer (weights not copied yet: see torch_twin)."""
    if isinstance(layer, L.Sequential):
        return nn.Sequential(_children(layer.layers))
    if isinstance(layer, L.Residual):
        return Residual(_children(layer.block), _children(layer.shortcut))
    if isinstance(layer, L.Dense):
        return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, L.Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding, dilation=layer.dilation, bias=layer.bias)
    if isinstance(layer, L.BatchNorm2d):
        return nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                              track_running_stats=layer.track_running_stats)
    if isinstance(layer, L.LayerNorm):
        return nn.LayerNorm(layer.normalized_shape, eps=layer.eps, elementwise_affine=layer.elementwise_affine,
                            bias=layer.bias)
    if isinstance(layer, L.MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    if isinstance(layer, L.AvgPool2d):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, count_include_pad=layer.count_include_pad)
    if isinstance(layer, L.GlobalAvgPool2d):
        return GlobalAvgPool2d()
    if isinstance(layer, L.Flatten):
        return nn.Flatten(layer.start_dim, layer.end_dim)
    if isinstance(layer, L.Dropout):
        return nn.Dropout(layer.p)
    if isinstance(layer, L.LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope)
    if isinstance(layer, L.Softmax):
        return nn.Softmax(layer.dim)
    for ours, theirs in ((L.ReLU, nn.ReLU), (L.Sigmoid, nn.Sigmoid), (L.Tanh, nn.Tanh)):
        if isinstance(layer, ours):
            return theirs()
    raise ArgumentError(f"torch_twin: no torch counterpart for layer {layer.name} ({type(layer).__name__}); "
                        "supported: Sequential, Residual, Dense/Linear, Conv2d, BatchNorm2d, LayerNorm, MaxPool2d, "
                        "AvgPool2d, GlobalAvgPool2d, Flatten, Dropout, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax")


def torch_twin(model, dtype=torch.float32):
    """A `torch.nn.Module` (of `dtype`) computing what `model` (a built ops.layers model)
    computes, with copies of its current parameters and state (batch norm's running
    statistics); `.train()` / `.eval()` choose the mode, as with torch."""
    if not model.built:
        raise ArgumentError(f"torch_twin: {model.name} is not built: call model.init(seed) first")
    twin = _twin(model).to(dtype)
    seeds = [k for k in model.state if k == "seed" or k.endswith(".seed")]         # Dropout's: torch has none
    ours = {**model.params, **{k: v for k, v in model.state.items() if k not in seeds}}
    theirs = twin.state_dict()                      # tensors sharing storage with the twin's
    missing = [k for k in theirs if k not in ours and not k.endswith("num_batches_tracked")]
    if missing or set(ours) - set(theirs):
        raise ArgumentError(f"torch_twin: the weights' names differ: only in torch {missing}, only in ours "
                            f"{sorted(set(ours) - set(theirs))}")
    with torch.no_grad():
        for name, array in ours.items():
            theirs[name].copy_(torch.from_numpy(np.asarray(array)))
    return twin


def torch_optimizer(name, params, lr):
    """The torch optimizer that `runtime.training.loop.fit(optimizer=name, lr=lr)` uses, with our
    optimizer's hyperparameters read from the one fit would build (OPTIMIZERS)."""
    if name not in OPTIMIZERS:
        raise ArgumentError(f"torch_optimizer: unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
    ours = OPTIMIZERS[name](lr)
    if isinstance(ours, O.optim.Adam):
        return torch.optim.Adam(params, lr=ours.lr, betas=ours.betas, eps=ours.eps, weight_decay=ours.weight_decay,
                                amsgrad=ours.amsgrad)
    if isinstance(ours, O.optim.SGD):
        return torch.optim.SGD(params, lr=ours.lr, momentum=ours.momentum, dampening=ours.dampening,
                               weight_decay=ours.weight_decay, nesterov=ours.nesterov)
    if isinstance(ours, O.optim.RMSprop):
        return torch.optim.RMSprop(params, lr=ours.lr, alpha=ours.alpha, eps=ours.eps,
                                   weight_decay=ours.weight_decay, momentum=ours.momentum, centered=ours.centered)
    raise ArgumentError(f"torch_optimizer: no torch counterpart for {ours!r}")


# -- fit's twin: the same training loop in torch ---------------------------------------------------

def torch_loss(reconstruct=False):
    """fit's loss in torch: cross entropy on the logits, or (reconstruct) the mean squared
    error between the output and the input."""
    if reconstruct:
        return lambda output, x: F.mse_loss(output, x.reshape(output.shape))
    return F.cross_entropy


def torch_train_step(forward, optimizer, loss, device="cpu", reconstruct=False):
    """step(x, y) on a NumPy batch, as fit's compiled step is called: the batch goes to the
    device, forward, backward, optimizer update; returns the loss as a float. `forward` is
    the twin, or `torch.compile(twin)`."""
    def step(x, y):
        x = torch.from_numpy(x).to(device)
        target = x if reconstruct else torch.from_numpy(y).to(device)
        optimizer.zero_grad(set_to_none=True)
        value = loss(forward(x), target)
        value.backward()
        optimizer.step()
        return value.item()
    return step


@torch.no_grad()
def torch_evaluate(twin, x, y, reconstruct=False, device="cpu", batch=512):
    """(mean loss, accuracy) of the twin in evaluation mode, as `runtime.training.loop.evaluate`;
    accuracy is None for a reconstruction. Leaves the twin in evaluation mode."""
    twin.eval()
    outputs = torch.cat([twin(torch.from_numpy(x[i:i + batch]).to(device)) for i in range(0, len(x), batch)]).cpu()
    if reconstruct:
        return F.mse_loss(outputs.reshape(len(x), -1), torch.from_numpy(x).reshape(len(x), -1)).item(), None
    y = torch.from_numpy(y)
    return F.cross_entropy(outputs, y).item(), (outputs.argmax(1) == y).double().mean().item()


def torch_fit(twin, data, epochs=10, batch_size=32, optimizer="adam", lr=1e-2, seed=0, reconstruct=False,
              device="cpu"):
    """`runtime.training.loop.fit` in torch eager: the same batches in the same order (data.batches
    drawing from one generator seeded with `seed`, the last short batch dropped), the same
    optimizer, each epoch's validation loss, the best epoch's weights restored for the test.
    Returns {"history": {"val_loss"}, "test_loss", "test_accuracy", "best_epoch", "seconds",
    "steps"}; seconds, as fit's, counts the steps, the validations and the test."""
    twin.to(device)
    x_train, y_train = data["train"]
    batch_size = min(batch_size, len(x_train))
    step = torch_train_step(twin, torch_optimizer(optimizer, twin.parameters(), lr), torch_loss(reconstruct),
                            device, reconstruct)
    rng = np.random.default_rng(seed)
    history, best, steps = {"val_loss": []}, (np.inf, None, 0), 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        twin.train()
        for x, y in batches(x_train, y_train, batch_size, seed=rng, drop_last=True):
            step(x, y)
            steps += 1
        val_loss, _ = torch_evaluate(twin, *data["val"], reconstruct, device)
        history["val_loss"].append(val_loss)
        if val_loss < best[0]:
            best = (val_loss, copy.deepcopy(twin.state_dict()), epoch)
    if best[1] is not None:
        twin.load_state_dict(best[1])
    test_loss, test_accuracy = torch_evaluate(twin, *data["test"], reconstruct, device)
    return {"history": history, "test_loss": test_loss, "test_accuracy": test_accuracy, "best_epoch": best[2],
            "seconds": time.perf_counter() - start, "steps": steps}


__all__ = ["GlobalAvgPool2d", "Residual", "torch_evaluate", "torch_fit", "torch_loss", "torch_optimizer",
           "torch_train_step", "torch_twin"]
