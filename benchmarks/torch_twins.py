"""Torch twins of chainrule models: moved to runtime/torch_twins.py, so that `chainrule bench`
works from the installed package; this module keeps the benchmarks' imports working."""
from runtime.torch_twins import (GlobalAvgPool2d, Residual, torch_evaluate, torch_fit, torch_loss, torch_optimizer,
                                 torch_train_step, torch_twin)

__all__ = ["GlobalAvgPool2d", "Residual", "torch_evaluate", "torch_fit", "torch_loss", "torch_optimizer",
           "torch_train_step", "torch_twin"]
