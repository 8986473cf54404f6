"""Replay: a step's launches recorded once, with every buffer at a fixed address, then run
again and again: on a GPU as one CUDA graph, so a small model's step costs one launch from
the host instead of one per kernel (each ~5 us of Python and driver work, more than the
kernel itself takes on a LeNet-sized batch).

What makes a step replayable is that nothing in it moves: the batch is copied into input
buffers allocated once, every kernel output is a view into the arena or a result buffer
allocated once, and a carried value that is not written in place is copied over the old one
at the end of the step (rather than its fresh buffer becoming the state, as the executor
does without replay), so the next replay finds the state where the recording left it. The
outputs handed to the caller are copies, since the buffers are the next step's.

Without a GPU the same recording is replayed by Python, launch by launch: the executor's
bookkeeping (which buffer each kernel reads, where it writes) is skipped, and the tests run
exactly the buffers and launches a CUDA graph would hold."""
from __future__ import annotations

import functools

import numpy as np

from compiler.lower import View

from .tensors import torch_dtype


class Recording:
    """executor's launches with fixed buffers. inputs: {input node: tensor} to read from (the
    benchmarks launch on their own device tensors); by default, buffers allocated here that each
    call copies the batch into. capture: make it a CUDA graph on a GPU (the default)."""

    def __init__(self, executor, inputs=None, capture=True):
        import torch  # optional heavy dependency: only a run on the device needs it

        ex = executor
        self.inputs = inputs if inputs is not None else \
            {node: torch.empty(node.shape, dtype=_dtype(node), device=ex.device) for node in ex.free_inputs}
        env = dict(ex.constants)
        env.update(ex.carried)
        env.update(self.inputs)
        self.launches = []
        for kernel, module, config in zip(ex.schedule.kernels, ex.modules, ex.launch_configs):
            inputs = [env[view.base] for view in kernel.inputs.values() if isinstance(view, View)]
            outputs = [ex._allocate(node) for node in kernel.outputs]   # a result buffer: allocated here, once
            if any(o.numel() for o in outputs):   # an empty output may sit beside a sum over it (0)
                self.launches.append(functools.partial(module.launch, *inputs, *outputs, **config))
            env.update(zip(kernel.outputs, outputs))
        for source, new in ex.carry:        # the new state over the old, where no kernel wrote it there
            if ex.carried_in_place(new):
                continue
            old, value = ex.carried[source], ex._value(new, env)
            if value.data_ptr() == old.data_ptr() and value.stride() == old.stride():
                continue                    # carried unchanged: already there
            self.launches.append(functools.partial(_copy_over, old, value))
        self.outputs = [ex._value(node, env) for node in ex.free_outputs]
        self.graph = None
        if capture and ex.device.type == "cuda":     # the kernels ran once before this (Triton compiled them)
            torch.cuda.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.launch_all()

    def __call__(self, args):
        import torch  # optional heavy dependency: only a run on the device needs it

        for buffer, array in zip(self.inputs.values(), args):
            buffer.copy_(torch.from_numpy(np.ascontiguousarray(array).reshape(buffer.shape)))   # 0-d stays 0-d
        if self.graph is not None:
            self.graph.replay()
        else:
            self.launch_all()
        return [value.cpu().numpy().copy() for value in self.outputs]

    def launch_all(self):
        """Every recorded launch, one by one (what the CUDA graph holds)."""
        with np.errstate(all="ignore"):
            for launch in self.launches:
                launch()


def _copy_over(old, value):
    """old[...] = value, also when value is a view of old's own memory (read it all first)."""
    shares = value.untyped_storage().data_ptr() == old.untyped_storage().data_ptr()
    old.copy_(value.clone() if shares else value)


def _dtype(node):
    return torch_dtype(node.dtype)
