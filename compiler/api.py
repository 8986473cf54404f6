"""The front door: trace a function, differentiate it, compile it, run it.

    g = C.trace(f, O.spec((3, 2)), O.spec((4, 3)))
    vg = C.value_and_grad(f, argnums=(0,), backend="reference")
    loss, (dw,) = vg(w, x)

`C.compile` runs the pipeline once for given input specs and returns a `Program`;
`C.jit`, `C.grad` and `C.value_and_grad` compile on first call for each combination of
input shapes and dtypes and reuse the Program afterwards. Called on traced tensors
(inside another trace) they inline their graph instead, so `C.grad(C.grad(f))`-style
compositions, such as a Hessian-vector product, work.
"""
from __future__ import annotations

import functools
import numbers
import warnings

import numpy as np

from ops import ir
from ops.errors import ArgumentError, ChainruleError
from ops.tensor import Spec, Tensor
from ops.trace import argument_names, as_input, function_name, record_checks, spec_of, to_numpy, trace

from . import artifacts, backends, cost
from .autodiff import grad_graph
from .graphs import replay
from .lower import lower
from .pipeline import Options, compile_function, timed, with_kernels
from .render import kernels_dot, to_image
from .saved import saved_bytes


# -- the compiled program ---------------------------------------------------------------------

class Program:
    """One compiled function for fixed input specs: a `Compiled` (every stage of the compile,
    compiler/pipeline.py) paired with the executor that runs it (runtime/executors/, found by
    backend name: compiler/backends.py)."""

    def __init__(self, fn, specs, static=None, grad_argnums=None, backend=None, with_value=True, remat=False,
                 has_aux=False, carry=None, autotune=None, replay=None):
        self.backend = backends.resolve(backend)
        executor_class = backends.executor_class(self.backend)
        self.grad_argnums, self.with_value, self.has_aux = grad_argnums, with_value, has_aux
        positions = None
        if grad_argnums is not None:
            positions = _positions(function_name(fn), len(specs), static or {}, grad_argnums)
        options = Options(grad_argnums=positions, with_value=with_value, has_aux=has_aux, remat=remat,
                          carry=tuple(dict(carry or {}).items()), target=executor_class.target_for(self.backend))
        self.compiled = compile_function(fn, specs, options, static=static)
        self.param_positions = positions or ()      # the inputs drawn as parameters
        self.executor = executor_class(self.compiled, autotune=autotune, replay=replay)
        self.compile_seconds = {**self.compiled.seconds, **self.executor.seconds}
        carried = {i for i, _ in self.compiled.carry}
        self.free_inputs = [n for i, n in enumerate(self.forward.inputs) if i not in carried]
        self.specs = [Spec(n.shape, n.dtype) for n in self.free_inputs]
        self._converted = set()          # arguments whose dtype Program.run converted (and said so)
        self._with_kernels = None

    # the stages of the compile, as the Compiled holds them
    forward = property(lambda self: self.compiled.forward)
    joint = property(lambda self: self.compiled.joint)
    graph = property(lambda self: self.compiled.graph)
    before_remat = property(lambda self: self.compiled.before_remat)
    remat = property(lambda self: self.compiled.options.remat)
    carry = property(lambda self: list(self.compiled.carry))

    @property
    def kernels(self):
        """The compile with its kernel passes: the program's own, or, for the reference backend
        (which runs the graph and compiles no kernels), the kernels the interpreter would run,
        compiled on first use for reports and pictures."""
        if self.compiled.schedule is not None:
            return self.compiled
        if self._with_kernels is None:
            self._with_kernels = with_kernels(self.compiled)
        return self._with_kernels

    @property
    def schedule(self):
        """The kernel Schedule (compiler/lower.py); see `kernels`."""
        return self.kernels.schedule

    @property
    def memory(self):
        """The MemoryPlan (compiler/memory.py); see `kernels`."""
        return self.kernels.memory

    def run(self, arrays):
        """Run on NumPy arrays (one per traced input that is not carried); returns the list of
        output arrays (those not carried). Every array enters a compiled program here, so it
        is checked here, on the host: its shape; its dtype (ops/trace.py as_input: another
        float width is converted to the compiled one, float64 data into a float32 program
        rounded to float32; a float for an integer input, or an int or a bool for a float one,
        is a DTypeError, never a silent conversion); and the class labels a loss reads
        (ops/trace.py LabelCheck), which a kernel could not reject."""
        if len(arrays) != len(self.specs):
            raise ArgumentError(f"{self.forward.name} takes {len(self.specs)} arrays "
                                f"({', '.join(n.name for n in self.free_inputs)}), got {len(arrays)}",
                                source=ir.capture_source())
        checked = []
        for spec, array, node in zip(self.specs, arrays, self.free_inputs):
            array = np.asarray(array)
            if array.shape != spec.shape:
                raise ArgumentError(f"argument {node.name} has shape {array.shape} but this program was compiled "
                                    f"for {spec.shape}", source=ir.capture_source())
            checked.append(as_input(array, spec.dtype, f"argument {node.name} of {self.forward.name}"))
            if checked[-1] is not array and node not in self._converted:      # said once per argument
                self._converted.add(node)
                warnings.warn(f"{self.forward.name}: argument {node.name} is {array.dtype}, but the program was "
                              f"compiled for {spec.dtype}: converted to {spec.dtype}", stacklevel=2)
        self._check_labels(checked)
        return self.executor(checked)

    def _check_labels(self, arrays):
        """The graph's label checks on the inputs they name (a check of labels computed inside
        the program is the reference evaluator's: ops/trace.py LabelCheck)."""
        position = {node: k for k, node in enumerate(self.free_inputs)}
        for check in self.forward.checks:
            if check.node in position:
                check.verify(arrays[position[check.node]], f"target {check.node.name}")

    def load_state(self, arrays):
        """The carried values' first values (compile(carry=...)), in carry order: they go to the
        device once and stay there, updated by every call."""
        checked = []
        for (i, _), array in zip(self.carry, arrays):
            node, array = self.graph.inputs[i], np.asarray(array)
            what = f"carried input {self.forward.inputs[i].name}"
            if array.shape != node.shape:
                raise ArgumentError(f"{what} has shape {node.shape}, got an array of shape {array.shape}",
                                    source=ir.capture_source())
            checked.append(as_input(array, node.dtype, what))
        self.executor.load_state(checked)

    def state(self):
        """The carried values now, as NumPy arrays in carry order."""
        return self.executor.state()

    def __call__(self, *args):
        outputs = self.run([to_numpy(a) for a in args])
        if self.carry:
            return tuple(outputs) if len(outputs) != 1 else outputs[0]
        aux = len(self.forward.outputs) - 1 if self.has_aux else 0
        return _package(outputs, self.forward.returns_tuple, self.grad_argnums, self.with_value, aux)

    def source(self):
        """The code this program runs: its kernels' Triton source (for the reference backend:
        the graph as Python)."""
        return self.executor.source()

    def report(self):
        """What the compile made and what a call runs. `executed`: what this backend runs per
        call (kernel launches, or for the reference backend the nodes it evaluates one by one).
        `kernels`, `kernel_bytes`, `dram_bytes` and the arena figures describe the compiled
        kernel schedule (`schedule_of` says for which target: for the reference backend, the
        kernels the interpreter would run). `compile_seconds`: one entry per pass, in order."""
        kernels = self.kernels
        return {"backend": self.backend,
                "executed": self.executor.executed(),
                "schedule_of": kernels.target.key if self.compiled.schedule is not None
                else f"{kernels.target.key} (compiled for this report: the reference backend runs no kernels)",
                "nodes": {"forward": self.forward.num_ops,
                          "joint": self.joint.num_ops if self.joint else None,
                          "simplified": self.graph.num_ops},
                "kernels": len(kernels.schedule.kernels),
                "unfused_kernels": len(lower(self.graph).kernels),
                "kernel_bytes": kernel_rows(kernels),
                "dram_bytes": cost.dram_bytes(kernels.schedule),
                "min_dram_bytes": cost.min_dram_bytes(self.graph),
                "arena_bytes": kernels.memory.arena_bytes,
                "live_lower_bound_bytes": kernels.memory.live_lower_bound_bytes,
                "no_reuse_bytes": kernels.memory.no_reuse_bytes,
                **self._saved_bytes(),
                "compile_seconds": dict(self.compile_seconds)}

    def _saved_bytes(self):
        """Bytes the forward keeps for the backward (compiler/saved.py), before and after remat."""
        out = {"saved_bytes": saved_bytes(self.graph)}
        if self.remat:
            out["saved_bytes_before_remat"] = saved_bytes(self.before_remat)
        return out

    def dump(self, directory):
        """Write the compile's artifacts into `directory` (compiler/artifacts.py): the traced,
        joint and simplified programs, the fusion groups (03_fusion.txt), the memory plan
        (04_memory.txt), the saved values (05_saved.txt), the autotuner's log (06_autotune.txt,
        the Triton backends), every generated kernel under kernels/ and run.py; the reference
        backend runs no kernels, so writes neither. Compiling twice writes the same files."""
        return artifacts.dump(self.compiled, directory, kernels=self.kernels, extra=self.executor.artifacts(),
                              launch_configs=getattr(self.executor, "tuned", ()),
                              params=self._params())

    def render(self, directory, fmt="svg", collapse="auto", quiet=False):
        """Draw the step (compiler/artifacts.py): forward.svg, backward.svg (or step.svg for a
        training step), kernels.svg and memory.svg. `fmt`: svg, png or pdf (dot: the graphviz
        text). Without graphviz's `dot` program the graphs are written as .dot files. Returns
        the paths written."""
        return artifacts.render(self.compiled, directory, kernels=self.kernels, fmt=fmt, collapse=collapse,
                                quiet=quiet, params=self._params())

    def _params(self):
        return [self.forward.inputs[i] for i in self.param_positions]

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter shows a compiled step as its kernels picture (the joint graph, fused)."""
        svg = to_image(kernels_dot(self.graph, self.schedule))
        bundle = {"text/plain": repr(self)}
        if svg is not None:
            bundle["image/svg+xml"] = svg.decode()
        return bundle


def kernel_rows(compiled):
    """Per kernel of a compile: its name, family, nodes and the bytes it reads (each input
    value once) and writes (compiler/cost.py)."""
    rows = []
    for kernel in compiled.kernels:
        reads, writes = cost.kernel_bytes(kernel)
        rows.append({"name": kernel.name, "family": kernel.family,
                     "nodes": [compiled.names[n] for n in kernel.nodes], "bytes_read": reads, "bytes_written": writes})
    return rows


def _positions(name, count, static, argnums):
    """argnums count every positional argument; map them to traced inputs (`count` of them)."""
    argnums = (argnums,) if isinstance(argnums, numbers.Integral) else tuple(argnums)
    total = count + len(static)
    traced = [i for i in range(total) if i not in static]
    positions = []
    for a in argnums:
        if not -total <= a < total:
            raise ArgumentError(f"argnums {a} is out of range for {name}, which takes {total} "
                                "arguments", op="grad", source=ir.capture_source())
        a %= total
        if a in static:
            raise ChainruleError(f"argument {a} is a Python number ({static[a]!r}), a constant of the graph: "
                                 "pass an array to differentiate with respect to it", op="grad",
                                 source=ir.capture_source())
        positions.append(traced.index(a))
    return tuple(positions)


def compile(fn, *specs, grad_argnums=None, backend=None, remat=False, carry=None, autotune=None, replay=None):
    """Compile fn for inputs described by `specs`. With grad_argnums, the Program returns
    (value, gradients). `carry` ({input position: output position}) makes that output feed
    that input at the next call, kept on the device and written over in place where safe (a
    training step's parameters and optimizer state): load the first values with
    `program.load_state(arrays)`, then pass only the other inputs; `program.state()` reads
    them back. `autotune`: time each matmul and conv kernel's block sizes at compile time and
    keep the fastest (runtime/executors/autotune.py); `replay`: from the second call on, replay the
    recorded launches (a CUDA graph on a GPU, runtime/executors/replay.py). None: on for a GPU, off
    under the interpreter."""
    return Program(fn, specs, grad_argnums=grad_argnums, backend=backend, remat=remat, carry=carry,
                   autotune=autotune, replay=replay)


# -- transformations with a cache per input signature -----------------------------------------

class _PerSignature:
    """A function that compiles itself for each new signature of its arguments."""

    def __init__(self, fn, backend, grad_argnums=None, with_value=True, kind="jit", has_aux=False):
        self.fn = fn
        self.backend = backend
        self.grad_argnums = grad_argnums
        self.with_value = with_value
        self.kind = kind
        self.has_aux = has_aux
        self.cache = {}
        # updated=(): copying fn's __dict__ would, for fn itself a _PerSignature (C.grad(C.grad(f))),
        # overwrite self.fn and share its cache, so the outer transformation would vanish
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise ArgumentError(f"{self.kind}: pass the arguments of {function_name(self.fn)} by position "
                                f"(got keywords {', '.join(kwargs)})", source=ir.capture_source())
        if any(isinstance(a, Tensor) for a in args):
            return self._inline(args)
        # Python numbers are baked in; NumPy scalars (np.float64(2.0), x.sum()) are data like arrays
        static = {i: a for i, a in enumerate(args)
                  if (isinstance(a, (numbers.Number, str)) and not isinstance(a, np.generic)) or a is None}
        arrays = [to_numpy(a) for i, a in enumerate(args) if i not in static]
        key = (tuple((a.shape, a.dtype.str) for a in arrays), tuple(sorted((i, repr(v)) for i, v in static.items())))
        program = self.cache.get(key)
        if program is None:
            names = [n for i, n in enumerate(argument_names(self.fn, len(args))) if i not in static]
            specs = [spec_of(a, f"argument {n} of {function_name(self.fn)}") for n, a in zip(names, arrays)]
            program = Program(self.fn, specs, static=static, grad_argnums=self.grad_argnums,
                              backend=self.backend, with_value=self.with_value, has_aux=self.has_aux)
            self.cache[key] = program
        return _package(program.run(arrays), program.forward.returns_tuple, self.grad_argnums, self.with_value,
                        self._aux_count(program.forward))

    def _aux_count(self, forward):
        return len(forward.outputs) - 1 if self.has_aux else 0

    def _inline(self, args):
        """Inside another trace: build this function's graph and splice it in."""
        static = {i: a for i, a in enumerate(args) if not isinstance(a, Tensor)}
        tensors = [a for a in args if isinstance(a, Tensor)]
        traced = graph = trace(self.fn, *[t.spec for t in tensors], static=static)
        aux = self._aux_count(graph)
        if self.grad_argnums is not None:
            graph = timed("autodiff", grad_graph, graph,
                          _positions(graph.name, len(graph.inputs), static, self.grad_argnums),
                          with_value=self.with_value, has_aux=self.has_aux)
        env = replay(graph, tensors)
        # the traced graph's label checks hold in the outer trace: on the tensors its inputs are
        # bound to (after autodiff, the only nodes the traced and the spliced graphs share)
        record_checks(traced, {**dict(zip(traced.inputs, tensors)), **env})
        return _package([env[o] for o in graph.outputs], graph.returns_tuple, self.grad_argnums, self.with_value,
                        aux)


def _package(outputs, returns_tuple, grad_argnums, with_value, aux=0):
    """Shape a flat list of outputs as the user asked: the function's own result, or
    (value, gradients), or the gradients alone; one gradient for an int argnums, a tuple
    for a tuple. With `aux` auxiliary outputs (has_aux), the value is (value, aux tuple)."""
    if grad_argnums is None:
        return tuple(outputs) if returns_tuple else outputs[0]
    extra = tuple(outputs[len(outputs) - aux:]) if aux else None
    outputs = outputs[:len(outputs) - aux] if aux else outputs
    grads = outputs[1:] if with_value else outputs
    grads = tuple(grads) if isinstance(grad_argnums, tuple) else grads[0]
    value = (outputs[0], extra) if aux else outputs[0]
    if aux and not with_value:
        return grads, extra
    return (value, grads) if with_value else grads


def jit(fn, backend=None):
    """fn compiled: takes and returns NumPy arrays."""
    return _PerSignature(fn, backend)


def grad(fn, argnums=0, backend=None):
    """The gradient of scalar-valued fn with respect to argument(s) argnums (an int gives one
    gradient, a tuple gives a tuple)."""
    return _PerSignature(fn, backend, grad_argnums=argnums, with_value=False, kind="grad")


def value_and_grad(fn, argnums=0, backend=None, has_aux=False):
    """(fn's value, its gradient(s)) from one compiled program. has_aux: fn returns
    (value, aux...) — only the value is differentiated — and the result is
    ((value, (aux...)), gradients), as in JAX."""
    return _PerSignature(fn, backend, grad_argnums=argnums, with_value=True, kind="value_and_grad", has_aux=has_aux)

