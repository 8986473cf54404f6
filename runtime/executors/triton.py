"""The Triton executor: load a compiled program's kernels and launch them in order.

It takes a `Compiled` (compiler/pipeline.py) whose kernel sources, schedule and memory plan
are made; it runs no compiler pass. Loading (Triton imports each source from the kernel
cache) and autotuning are its own steps, timed in `seconds`.

On a GPU the kernels are compiled by Triton; without one they run under Triton's
interpreter on CPU tensors. NumPy arrays go in and come out; in between, values are torch
tensors on the device, and a value that is a view (a transpose, a broadcast, a slice) is
never copied: the next kernel reads it through its strides. Kernel outputs are views into
one arena per program (a uint8 tensor), at the offsets of the memory plan (compiler/memory.py),
except the buffers of the graph's outputs: every call allocates those fresh, the kernels
write them directly, and they are handed to the caller.

A program compiled with `carry` (a training step: parameters, model and optimizer state in,
their new values out) keeps those values on the device between calls, the *persistent part*:
the caller passes only the other inputs (a batch, the learning rate), and each carried
output is written over the input it replaces where the memory plan proves that safe, else
its fresh buffer simply becomes the state. Nothing crosses to the host until `state()`.

Two things happen once, to make every later call cheaper: each matmul and conv kernel's
block sizes are chosen by timing (runtime/executors/autotune.py; on by default on a GPU), and from the
second call on the step's launches are replayed from a recording with fixed buffers
(runtime/executors/replay.py: a CUDA graph on a GPU; on by default there).
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from compiler.lower import Literal, View
from compiler.pipeline import TARGETS
from ops.errors import BackendError

from . import autotune, kernel_cache
from .replay import Recording
from .tensors import itemsize, torch_dtype


class DeviceMemoryError(BackendError, MemoryError):
    """A program whose buffers cannot fit in the device's memory, found before allocating."""


def target_for(backend):
    """"triton": the GPU when CUDA is available (kernels for sm_90), else the interpreter;
    "interpret": always the interpreter."""
    import torch  # optional heavy dependency: only a program that runs kernels needs it

    if backend == "triton" and torch.cuda.is_available():
        return TARGETS["sm_90"]
    return TARGETS["interpret"]


_BLAS = []


def _one_blas_thread(target):
    """Under the interpreter, tl.dot is NumPy's matmul: one BLAS thread for the step. The
    interpreter's tiles are small matrices, for which a second thread costs more than it
    gives, and far more when the other core is busy (a 4096 x 144 x 16 product: 72 ms with two
    threads beside another process, 0.3 ms with one; the LeNet step 0.23 -> 0.14 s)."""
    if not target.interpret:
        return contextlib.nullcontext()
    if not _BLAS:
        from threadpoolctl import ThreadpoolController  # only under the interpreter: its tl.dot is NumPy's matmul

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


class TritonExecutor:
    """Runs a Compiled's kernels. poison: fill every output before its kernel runs (a kernel
    that forgets an element leaves NaN behind); autotune, replay: None means on for a GPU,
    off for the interpreter."""

    target_for = staticmethod(target_for)

    def __init__(self, compiled, poison=False, autotune=None, replay=None):
        import torch  # optional heavy dependency: tensors on the device

        self.compiled = compiled
        self.graph, self.schedule, self.plan = compiled.graph, compiled.schedule, compiled.memory
        self.target, self.sources, self.names = compiled.target, compiled.sources, compiled.names
        self.poison = poison
        self.carry = compiled.carried
        self.seconds = {}
        start = time.perf_counter()
        self.modules = [kernel_cache.load(text, self.target.interpret) for text in self.sources]
        self.seconds["load"] = time.perf_counter() - start
        self.device = torch.device(self.target.device)
        self.constants = {node: torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
                          for node, array in self.schedule.constants.items()}
        # every kernel output lives in one arena, at the offset the memory plan gives it
        self.offsets = self.plan.offsets
        self.in_place = self.plan.in_place
        self.written_over = self.plan.written_over
        graph = self.graph
        self.results = {r.base for o in graph.outputs if isinstance(r := self.schedule.location(o), View)}
        self.free_inputs = [n for n in graph.inputs if n not in {s for s, _ in self.carry}]
        self.free_outputs = [o for o in graph.outputs if o not in {new for _, new in self.carry}]
        self.handed_out = {w.base for o in self.free_outputs if isinstance(w := self.schedule.location(o), View)}
        self.carried = {}                    # input node -> its tensor on the device (the persistent part)
        self.arena = None
        # each kernel's launch parameters: the code generator's pick for this device, or (autotuning)
        # the fastest of the candidates, timed at compile time where a kernel has a choice
        self.launch_configs = [kernel_cache.launch_configs(m, self.target.interpret)[0] for m in self.modules]
        self.autotune = self.target.device == "cuda" if autotune is None else bool(autotune)
        self.tunings, self.tuned = [], [{} for _ in self.schedule.kernels]
        if self.autotune:
            start = time.perf_counter()
            self._tune()
            self.seconds["autotune"] = time.perf_counter() - start
        self.replay = self.target.device == "cuda" if replay is None else bool(replay)
        self.recording, self.calls = None, 0

    def _tune(self):
        with _one_blas_thread(self.target), np.errstate(all="ignore"):     # random inputs: sqrt(-1) is nan, quietly
            for i, (kernel, module, text) in enumerate(zip(self.schedule.kernels, self.modules, self.sources)):
                if autotune.candidates(module, self.target) is not None:
                    tuning = autotune.tune(kernel.name, text, module, lambda: self._random_args(kernel), self.target)
                    self.tunings.append(tuning)
                    self.launch_configs[i] = self.tuned[i] = tuning.config

    def _random_args(self, kernel):
        """Inputs of a kernel's shapes, drawn at random (constants as they are), and fresh outputs."""
        import torch  # optional heavy dependency: only a run on the device needs it

        inputs = []
        for view in kernel.inputs.values():
            if not isinstance(view, View):
                continue
            node = view.base
            if node in self.constants:
                inputs.append(self.constants[node])
            elif node.dtype in ("float32", "float64"):
                inputs.append(torch.randn(node.shape, dtype=torch_dtype(node.dtype), device=self.device))
            else:                          # masks, labels: small values, valid as indices too
                inputs.append(torch.randint(0, 2, node.shape, device=self.device).to(torch_dtype(node.dtype)))
        outputs = [torch.empty(node.shape, dtype=torch_dtype(node.dtype), device=self.device) for node in kernel.outputs]
        return inputs, outputs

    def carried_in_place(self, new):
        """Whether a carried output's kernel writes it over the old value."""
        where = self.schedule.location(new)
        return isinstance(where, View) and where.base in self.written_over

    def load_state(self, arrays):
        """Put the carried values (in `carry` order) on the device, once."""
        import torch  # optional heavy dependency: only a run on the device needs it

        self.carried = {source: torch.from_numpy(np.array(array, dtype=source.dtype)).to(self.device)
                        for (source, _), array in zip(self.carry, arrays)}
        self.recording = None              # it holds the old tensors: record again

    def state(self):
        """The carried values now, copied to NumPy (in `carry` order)."""
        return [self.carried[source].cpu().numpy().copy() for source, _ in self.carry]

    def __call__(self, args, observe=None):
        """args: one array per input that is not carried. observe(kernel, {node: its output
        tensor}) is called after each launch, before later kernels reuse the arena
        (compiler/inspect.py copies every value there)."""
        import torch  # optional heavy dependency: only a run on the device needs it

        if self.arena is None:          # one arena per program, reused by every call
            self._check_memory()
            self.arena = torch.empty(self.plan.arena_bytes, dtype=torch.uint8, device=self.device)
        if self.carry and not self.carried:
            raise RuntimeError("this program carries state: call load_state(arrays) before running it")
        if self.replay and observe is None and self.calls:   # the first call compiled every kernel
            with _one_blas_thread(self.target):
                if self.recording is None:
                    self.recording = Recording(self)
                return self.recording(args)
        self.calls += 1
        self.recording = None               # this call may move the state: a recording would hold the old
        env = dict(self.constants)
        env.update(self.carried)
        for node, array in zip(self.free_inputs, args):
            env[node] = torch.from_numpy(np.ascontiguousarray(array, dtype=node.dtype)).to(self.device)
        with np.errstate(all="ignore"), _one_blas_thread(self.target):   # log(0) is -inf, quietly
            for kernel, module, config in zip(self.schedule.kernels, self.modules, self.launch_configs):
                inputs = [env[view.base] for view in kernel.inputs.values() if isinstance(view, View)]
                outputs = [self._allocate(node) for node in kernel.outputs]
                if any(o.numel() for o in outputs):   # an empty output may sit beside a sum over it (0)
                    module.launch(*inputs, *outputs, **config)
                env.update(zip(kernel.outputs, outputs))
                if observe is not None:
                    observe(kernel, dict(zip(kernel.outputs, outputs)))
        for source, new in self.carry:       # the new state: written in place, or its fresh buffer
            if self.carried_in_place(new):
                continue
            where = self.schedule.location(new)
            value = self._value(new, env)     # a result buffer no one else is handed is taken as it is
            taken = isinstance(where, View) and where.base in self.results and where.base not in self.handed_out
            self.carried[source] = value.contiguous() if taken else value.clone()
        results = []
        for node in self.free_outputs:
            value, where = self._value(node, env), self.schedule.location(node)
            fresh = isinstance(where, View) and where.base in self.results   # else a view of an input: copied
            results.append(value.cpu().numpy() if fresh else value.cpu().numpy().copy())
        return results

    def _check_memory(self):
        """Refuse, before allocating anything, a program whose arena and result buffers exceed
        the device's memory (on a GPU: free now; on the CPU: physical memory): the allocator's
        own error names no op and no line, the largest buffer is almost always the mistake."""
        results = [node for node in self.results if node not in self.offsets]
        needed = self.plan.arena_bytes + sum(map(_bytes, results))
        available = _device_memory(self.device)
        if needed <= available:
            return
        largest = max([*self.offsets, *results], key=_bytes)
        raise DeviceMemoryError(f"this program needs {_size(needed)} of {self.device.type} memory (arena "
                                f"{_size(self.plan.arena_bytes)}, results {_size(needed - self.plan.arena_bytes)}) "
                                f"but {_size(available)} is available; its largest buffer is "
                                f"{self.names.get(largest, largest.name)}, {largest.dtype}{list(largest.shape)} "
                                f"({_size(_bytes(largest))})", op=largest.op, source=largest.source)

    def _value(self, node, env):
        """An output's value as a tensor on the device: a view of its buffer, or a literal filled in."""
        import torch  # optional heavy dependency: only a run on the device needs it

        where = self.schedule.location(node)
        if isinstance(where, Literal):
            return torch.full(node.shape, where.value, dtype=torch_dtype(node.dtype), device=self.device)
        base = env[where.base]         # as_strided's offset counts from the start of the storage
        return torch.as_strided(base, where.shape, where.strides, base.storage_offset() + where.offset)

    def _allocate(self, node):
        import torch  # optional heavy dependency: only a run on the device needs it

        if node in self.written_over:   # a carried value's new value, written over its old one
            return self.carried[self.written_over[node]]
        if node in self.offsets:
            start = self.offsets[node]
            out = self.arena[start:start + node.numel * itemsize(node.dtype)].view(torch_dtype(node.dtype))
            out = out.view(node.shape)
        else:                           # a result buffer: the caller's, fresh for every call
            out = torch.empty(node.shape, dtype=torch_dtype(node.dtype), device=self.device)
        # a kernel that forgets an element leaves the poison behind, and the tests see it; an output
        # written in place over its input holds that input, which the kernel has yet to read
        if self.poison and node not in self.in_place:
            if node.dtype in ("float32", "float64"):
                out.fill_(float("nan"))
            elif node.dtype == "bool":
                out.fill_(True)
            else:
                out.fill_(np.iinfo(node.dtype).min)
        return out

    def source(self):
        return self.compiled.source()

    def executed(self):
        """What one call runs: the kernels, one launch each."""
        return {"backend": "interpret" if self.target.interpret else "triton", "runs": "kernels",
                "count": len(self.schedule.kernels)}

    def artifacts(self):
        """What this executor adds to a compile's folder: the autotuner's log."""
        return [("06_autotune.txt", self.autotune_text())]

    def autotune_text(self):
        return autotune.text(self.tunings, self.target, self.autotune)


def _bytes(node):
    return node.numel * itemsize(node.dtype)


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _device_memory(device):
    """Bytes the device can give a program: a GPU's free memory, or the machine's RAM."""
    if device.type == "cuda":
        import torch  # optional heavy dependency: asking the GPU

        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
