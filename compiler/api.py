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
import inspect
import numbers
import time

import numpy as np

from ops.tensor import Spec, Tensor
from ops.trace import default_dtype, function_name, to_numpy, trace

from ops import ir
from .autodiff import grad_graph
from .remat import regenerate_random
from ops.errors import ArgumentError, ChainruleError
from .graphs import carried_nodes
from .graphs import replay
from .simplify import simplify


# -- the compiled program ---------------------------------------------------------------------

class Program:
    """One compiled function for fixed input specs: its graphs at every stage, its executor,
    and what the compile cost."""

    def __init__(self, fn, specs, static=None, grad_argnums=None, backend=None, with_value=True, remat=False,
                 has_aux=False, carry=None, autotune=None, replay=None):
        from runtime.executors.backends import executor_for, resolve

        self.backend = resolve(backend)
        self.grad_argnums = grad_argnums
        self.with_value = with_value
        self.has_aux = has_aux
        self.compile_seconds = {}
        start = time.perf_counter()
        self.forward = trace(fn, *specs, static=static)
        self._lap("trace", start)
        self.param_positions = ()
        if grad_argnums is not None:
            positions = self.param_positions = _positions(self.forward, static or {}, grad_argnums)
            start = time.perf_counter()
            self.joint = grad_graph(self.forward, positions, with_value=with_value, has_aux=has_aux)
            self._lap("autodiff", start)
        else:
            self.joint = None
        start = time.perf_counter()
        self.graph = regenerate_random(simplify(self.joint or self.forward))   # dropout masks: never saved
        self._lap("simplify", start)
        self.remat, self.before_remat = remat, None
        if remat:              # recompute cheap pointwise values in the backward (compiler/remat.py)
            from .remat import rematerialize

            start = time.perf_counter()
            self.before_remat, self.graph = self.graph, rematerialize(self.graph)
            self._lap("remat", start)
        self.carry = _carry_pairs(self.graph, carry, grad_argnums)
        start = time.perf_counter()
        self.executor = executor_for(self.graph, self.backend, self.carry, autotune=autotune, replay=replay)
        self._lap("lower", start)
        tuned = getattr(self.executor, "autotune_seconds", 0.0)
        if getattr(self.executor, "autotune", False):       # timing the kernels' candidates is a pass of its own
            self.compile_seconds["lower"] -= tuned
            self.compile_seconds["autotune"] = tuned
        carried = {i for i, _ in self.carry}
        self.specs = [Spec(n.shape, n.dtype) for i, n in enumerate(self.forward.inputs) if i not in carried]
        self.free_inputs = [n for i, n in enumerate(self.forward.inputs) if i not in carried]

    def _lap(self, name, start):
        self.compile_seconds[name] = time.perf_counter() - start

    def run(self, arrays):
        """Run on NumPy arrays (one per traced input that is not carried); returns the list of
        output arrays (those not carried)."""
        if len(arrays) != len(self.specs):
            raise ArgumentError(f"{self.forward.name} takes {len(self.specs)} arrays "
                                f"({', '.join(n.name for n in self.free_inputs)}), got {len(arrays)}",
                                source=ir.capture_source())
        for spec, array, node in zip(self.specs, arrays, self.free_inputs):
            if np.shape(array) != spec.shape:
                raise ArgumentError(f"argument {node.name} has shape {array.shape} but this program was compiled "
                                    f"for {spec.shape}", source=ir.capture_source())
        return self.executor([np.asarray(a).astype(s.dtype, copy=False) for a, s in zip(arrays, self.specs)])

    def load_state(self, arrays):
        """The carried values' first values (compile(carry=...)), in carry order: they go to the
        device once and stay there, updated by every call."""
        for (i, _), array in zip(self.carry, arrays):
            node = self.graph.inputs[i]
            if np.shape(array) != node.shape:
                raise ArgumentError(f"carried input {self.forward.inputs[i].name} has shape {node.shape}, "
                                    f"got an array of shape {np.shape(array)}", source=ir.capture_source())
        self.executor.load_state([np.asarray(a) for a in arrays])

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
        """The code this program runs (for the reference backend: the graph as Python)."""
        return self.executor.source()

    @property
    def memory(self):
        """The MemoryPlan of this step (compiler/memory.py): the one the Triton executor runs
        from, or, for the reference backend (which frees each value after its last use and
        has no arena), the plan the Triton backends make for the same graph, fused and lowered
        the same way, so every backend reports the same numbers."""
        plan = getattr(self.executor, "plan", None)
        if plan is None:
            if getattr(self, "_memory", None) is None:
                from .memory import plan_memory

                self._memory = plan_memory(self.schedule, carried=carried_nodes(self.graph, self.carry))
            plan = self._memory
        return plan

    @property
    def schedule(self):
        """The kernel Schedule of this step (compiler/lower.py): the Triton executor's, or, for
        the reference backend, the fused lowering the Triton backends would run."""
        schedule = getattr(self.executor, "schedule", None)
        if schedule is None:
            if getattr(self, "_schedule", None) is None:
                from .fusion import fuse
                from .lower import lower

                self._schedule = lower(self.graph, fuse(self.graph), carried_nodes(self.graph, self.carry))
            schedule = self._schedule
        return schedule

    def report(self):
        """What the compile made: op counts per stage, kernels and the bytes each moves
        (the Triton backends), the bytes all kernels move against the compulsory traffic
        (compiler/cost.py), the memory plan's arena against its lower bound (most bytes
        live at once) and against no reuse (the reference backend reports the bytes and the
        plan of the fused lowering the Triton backends would run, see `schedule`), and the
        seconds each pass took."""
        from . import cost
        from .lower import lower

        kernels = self.executor.kernel_report()
        memory = self.memory
        return {"backend": self.backend,
                "nodes": {"forward": self.forward.num_ops,
                          "joint": self.joint.num_ops if self.joint else None,
                          "simplified": self.graph.num_ops},
                "kernels": len(kernels),
                "unfused_kernels": len(lower(self.graph).kernels),
                "kernel_bytes": kernels,
                "dram_bytes": cost.dram_bytes(self.schedule),
                "min_dram_bytes": cost.min_dram_bytes(self.graph),
                "arena_bytes": memory.arena_bytes,
                "live_lower_bound_bytes": memory.live_lower_bound_bytes,
                "no_reuse_bytes": memory.no_reuse_bytes,
                **self._saved_bytes(),
                "compile_seconds": dict(self.compile_seconds)}

    def _saved_bytes(self):
        """Bytes the forward keeps for the backward (compiler/saved.py), before and after remat."""
        from .saved import saved_bytes

        out = {"saved_bytes": saved_bytes(self.graph)}
        if self.remat:
            out["saved_bytes_before_remat"] = saved_bytes(self.before_remat)
        return out

    def dump(self, directory):
        """Write the compile's artifacts into `directory`: the traced, joint and simplified
        programs, the fusion groups (03_fusion.txt), the memory plan (04_memory.txt), the saved
        values (05_saved.txt), every generated kernel under kernels/ and run.py, which runs
        those kernels on random inputs against the reference (compiler/repro.py); the reference
        backend generates no kernels, so writes neither. Compiling twice writes the same files."""
        import os

        os.makedirs(directory, exist_ok=True)
        files = [("00_trace.py", self.forward), ("01_joint.py", self.joint), ("02_simplified.py", self.graph)]
        files = [(name, str(graph)) for name, graph in files if graph is not None]
        from .fusion import fuse

        files.append(("03_fusion.txt", (getattr(self.executor, "fusion", None) or fuse(self.graph)).text(self.schedule)))
        files.append(("04_memory.txt", self.memory.text()))
        from .saved import saved_report

        files.append(("05_saved.txt", saved_report(self.graph, before=self.before_remat)))
        if hasattr(self.executor, "autotune_text"):                  # the Triton backends
            files.append(("06_autotune.txt", self.executor.autotune_text()))
        files += [(os.path.join("kernels", name), text) for name, text in self.executor.files()]
        if getattr(self.executor, "schedule", None) is not None:     # the reference backend has no kernels
            from compiler.repro import run_script

            files.append(("run.py", run_script(self.executor)))
        from runtime.executors.kernel_cache import write_atomic

        written = []
        for name, text in files:
            path = os.path.join(directory, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_atomic(path, text)
            written.append(path)
        return written + self.render(directory, quiet=True)

    def render(self, directory, fmt="svg", collapse="auto", quiet=False):
        """Draw the step (compiler/render.py, compiler/memory_plot.py): forward.svg (the traced
        program), backward.svg (the joint graph: gradients flowing back, saved values dashed),
        kernels.svg (every fused kernel as a cluster) and memory.svg (buffer lifetimes in the
        arena); a training step (compile_train_step) draws step.svg in place of the first two:
        forward, backward and update in one picture. `fmt`: svg, png or pdf (dot: the graphviz text). Without graphviz's `dot`
        program the graphs are written as .dot files. Returns the paths written."""
        import os

        from .memory_plot import plot_memory
        from .render import backward_dot, forward_dot, kernels_dot, render_dot

        params = [self.forward.inputs[i] for i in self.param_positions]
        if self.joint is None and any(n.role == "backward" for n in self.forward.nodes):
            # a training step (C.compile_train_step): forward, backward and update in one trace
            pictures = [("step", backward_dot(self.forward, collapse=collapse, whole_step=True, params=params,
                                              title=f"{self.forward.name}: forward (blue), backward (orange) and "
                                                    "the update (purple) in one program"))]
        else:
            pictures = [("forward", forward_dot(self.forward, params=params, collapse=collapse,
                                                title=f"{self.forward.name}: the forward program",
                                                output_name="loss" if self.joint is not None else None))]
        if self.joint is not None:
            users_names = {j: f.name for j, f in zip(self.graph.inputs, self.forward.inputs) if f.name}
            pictures.append(("backward", backward_dot(self.graph, collapse=collapse, input_names=users_names,
                                                      title=f"{self.graph.name}: the chain rule, from the loss back "
                                                            "to every parameter (dashed: values saved by the "
                                                            "forward)")))
        schedule = self.schedule
        pictures.append(("kernels", kernels_dot(self.graph, schedule, collapse=collapse,
                                                title=f"{self.graph.name}: {len(schedule.kernels)} kernels")))
        written = [render_dot(text, os.path.join(directory, f"{name}.{fmt}"), quiet=quiet) for name, text in pictures]
        written.append(plot_memory(self.memory, os.path.join(directory, f"memory.{'svg' if fmt == 'dot' else fmt}"),
                                   kernel_labels=[k.name for k in schedule.kernels]))
        return written

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Jupyter shows a compiled step as its kernels picture (the joint graph, fused)."""
        from .render import kernels_dot, to_image

        svg = to_image(kernels_dot(self.graph, self.schedule))
        bundle = {"text/plain": repr(self)}
        if svg is not None:
            bundle["image/svg+xml"] = svg.decode()
        return bundle


def _positions(graph, static, argnums):
    """argnums count every positional argument; map them to traced inputs."""
    argnums = (argnums,) if isinstance(argnums, numbers.Integral) else tuple(argnums)
    total = len(graph.inputs) + len(static)
    traced = [i for i in range(total) if i not in static]
    positions = []
    for a in argnums:
        if not -total <= a < total:
            raise ArgumentError(f"argnums {a} is out of range for {graph.name}, which takes {total} "
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


def _carry_pairs(graph, carry, grad_argnums):
    """compile's `carry` as checked (input index, output index) pairs."""
    if not carry:
        return []
    if grad_argnums is not None:
        raise ArgumentError("compile: carry and grad_argnums do not go together; compute the new values "
                            "inside the function (C.value_and_grad) and carry those")
    pairs = sorted(dict(carry).items())
    outs = [j for _, j in pairs]
    if len(set(outs)) != len(outs):
        raise ArgumentError(f"compile: carry feeds one output into two inputs: {dict(carry)}")
    for i, j in pairs:
        if not (0 <= i < len(graph.inputs) and 0 <= j < len(graph.outputs)):
            raise ArgumentError(f"compile: carry {i} -> {j} is out of range: {graph.name} has "
                                f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs")
        source, new = graph.inputs[i], graph.outputs[j]
        if (source.shape, source.dtype) != (new.shape, new.dtype):
            raise ArgumentError(f"compile: carry {i} -> {j}: output {j} is {new.type_str} but input "
                                f"{source.name} is {source.type_str}; a carried value keeps its type")
    return pairs


# -- transformations with a cache per input signature -----------------------------------------

class _Compiled:
    """A function that compiles itself for each new signature of its arguments."""

    def __init__(self, fn, backend, grad_argnums=None, with_value=True, kind="jit", has_aux=False):
        self.fn = fn
        self.backend = backend
        self.grad_argnums = grad_argnums
        self.with_value = with_value
        self.kind = kind
        self.has_aux = has_aux
        self.cache = {}
        # updated=(): copying fn's __dict__ would, for fn itself a _Compiled (C.grad(C.grad(f))),
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
            specs = [Spec(a.shape, default_dtype(a.dtype)) for a in arrays]
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
        graph = trace(self.fn, *[t.spec for t in tensors], static=static)
        aux = self._aux_count(graph)
        if self.grad_argnums is not None:
            graph = grad_graph(graph, _positions(graph, static, self.grad_argnums), with_value=self.with_value,
                               has_aux=self.has_aux)
        env = replay(graph, tensors)
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
    return _Compiled(fn, backend)


def grad(fn, argnums=0, backend=None):
    """The gradient of scalar-valued fn with respect to argument(s) argnums (an int gives one
    gradient, a tuple gives a tuple)."""
    return _Compiled(fn, backend, grad_argnums=argnums, with_value=False, kind="grad")


def value_and_grad(fn, argnums=0, backend=None, has_aux=False):
    """(fn's value, its gradient(s)) from one compiled program. has_aux: fn returns
    (value, aux...) — only the value is differentiated — and the result is
    ((value, (aux...)), gradients), as in JAX."""
    return _Compiled(fn, backend, grad_argnums=argnums, with_value=True, kind="value_and_grad", has_aux=has_aux)

