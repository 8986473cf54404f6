"""The compile pipeline: every pass, in order, in one function, and the one value it makes.

    fn, specs ──trace──▶ forward ──autodiff──▶ joint ──simplify──▶ graph ──(remat)──▶
        ──fuse──▶ fusion groups ──lower──▶ kernel schedule ──codegen──▶ Triton sources
        ──plan_memory──▶ arena                                            = Compiled

`compile_function` and `compile_graph` call each pass explicitly, time it on its own
(`Compiled.seconds`, in pipeline order) and return a `Compiled` holding everything the
compile produced. Nothing here runs a kernel, allocates a buffer or imports torch or triton:
an executor (runtime/executors/) takes a `Compiled` and only loads and launches it, and the
artifacts, pictures and reports are read from it (compiler/artifacts.py).

A target names where the kernels will run (`"interpret"`, `"sm_80"`, `"sm_90"`): the code
generator and the memory plan's alignment depend on it. Without a target (the reference
backend, which runs the graph node by node) the pipeline stops after the graph passes;
`with_kernels` runs the rest later, for a report or a picture of what the kernels would be.
"""
from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field, replace

from ops.errors import ArgumentError
from ops.printer import value_names
from ops.trace import trace

from .autodiff import grad_graph
from .codegen import Target, generate
from .codegen.common import kernel_names
from .fusion import FusionPlan, fuse
from .graphs import carried_nodes
from .lower import Schedule, lower
from .memory import MemoryPlan, plan_memory, verify
from .remat import regenerate_random, rematerialize
from .simplify import simplify

TARGETS = {
    "interpret": Target(device="cpu", interpret=True),    # Triton's interpreter on the CPU
    "sm_80": Target(device="cuda", interpret=False),      # an A100
    "sm_90": Target(device="cuda", interpret=False),      # an H100 / H200
}
ALIGNMENT = {"cuda": 256, "cpu": 64}                      # bytes between arena buffers


def target_named(name):
    """A Target from its name (a Target passes through)."""
    if isinstance(name, Target) or name is None:
        return name
    if name not in TARGETS:
        raise ArgumentError(f"unknown target {name!r}: choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


@dataclass(frozen=True)
class Options:
    """What to compile: grad_argnums (positions among the traced inputs) adds the backward
    pass; carry pairs (input index, output index) of values kept between calls; target: where
    the kernels run (None: no kernels, the graph itself is the program); fuse=False lowers
    one kernel per node (the gradient check compares every value)."""

    grad_argnums: tuple | None = None
    with_value: bool = True
    has_aux: bool = False
    remat: bool = False
    carry: tuple = ()
    target: Target | None = TARGETS["interpret"]
    fuse: bool = True


@dataclass(frozen=True)
class Compiled:
    """Everything one compile produced, stage by stage. Frozen: executors, reports,
    artifacts and pictures read it and never change it."""

    options: Options
    forward: object                       # the traced Graph
    joint: object | None                  # forward + backward (None without grad_argnums)
    before_remat: object | None           # the simplified graph before remat (None without remat)
    graph: object                         # the graph the program computes (simplified, remat'ed)
    carry: tuple = ()                     # (input index, output index) pairs, checked
    fusion: FusionPlan | None = None      # kernel groups, and why each rejected pair did not fuse
    schedule: Schedule | None = None      # the kernels in launch order, and where each value lives
    names: dict = field(default_factory=dict)   # node -> its name in kernel code
    sources: tuple = ()                   # the Triton source of each kernel, in launch order
    memory: MemoryPlan | None = None      # offsets in one arena, carried values written in place
    seconds: dict = field(default_factory=dict)  # pass -> seconds, in pipeline order

    @property
    def target(self):
        return self.options.target

    @property
    def carried(self):
        """The carry pairs as (input node, output node) of `graph`."""
        return carried_nodes(self.graph, self.carry)

    @property
    def kernels(self):
        return self.schedule.kernels if self.schedule is not None else []

    def files(self):
        """(file name, source) of every kernel, numbered in launch order (kernels/NN_name.py)."""
        return [(f"{k.index:02d}_{k.label}.py", text) for k, text in zip(self.kernels, self.sources)]

    def source(self):
        """Every kernel's source, one after the other."""
        return "\n\n".join(f"# ---- {k.name} ----\n{text}" for k, text in zip(self.kernels, self.sources))


PASSES = ("trace", "autodiff", "simplify", "remat", "fuse", "lower", "codegen", "plan_memory")
_RUNNING = []         # the stopwatches timing a pass right now, innermost last


class _Stopwatch:
    """Runs each pass and records its seconds under its name, in pipeline order. A pass that
    runs inside another (the autodiff of a training step happens while its function is
    traced: `timed`) is counted under its own name and not under the outer one's."""

    def __init__(self, seconds=None):
        self.seconds = dict(seconds or {})
        self._inner = []          # per pass running now: seconds spent in passes inside it

    def run(self, name, pass_, *args, **kwargs):
        start = time.perf_counter()
        self._inner.append(0.0)
        _RUNNING.append(self)
        try:
            return pass_(*args, **kwargs)
        finally:
            _RUNNING.pop()
            elapsed = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed
            order = {p: i for i, p in enumerate(PASSES)}
            self.seconds = dict(sorted(self.seconds.items(), key=lambda item: order.get(item[0], len(PASSES))))


def timed(name, pass_, *args, **kwargs):
    """Run a pass that a compile calls from inside another pass (value_and_grad inlined into a
    traced training step runs autodiff during the trace): it is timed under `name` in the
    compile running now, if any."""
    if not _RUNNING:
        return pass_(*args, **kwargs)
    return _RUNNING[-1].run(name, pass_, *args, **kwargs)


@contextlib.contextmanager
def _no_cycle_collection():
    """Python's cycle collector paused while a compile runs. The passes build whole new
    graphs and drop the old ones; nodes hold no cycles, so reference counting frees them,
    and a collection in between would only walk every object alive (a full one: ~0.1 s for
    a ResNet-18 training step, for nothing)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compile_function(fn, specs, options=Options(), static=None):
    """Trace fn on `specs` and compile it (see `compile_graph`)."""
    clock = _Stopwatch()
    with _no_cycle_collection():
        forward = clock.run("trace", trace, fn, *specs, static=static)
        return compile_graph(forward, options, clock.seconds)


def compile_graph(forward, options=Options(), seconds=None):
    """Every pass after tracing, in order; returns the `Compiled`."""
    with _no_cycle_collection():
        return _compile_graph(forward, options, seconds)


def _compile_graph(forward, options, seconds):
    clock = _Stopwatch(seconds)
    joint = None
    if options.grad_argnums is not None:
        joint = clock.run("autodiff", grad_graph, forward, options.grad_argnums, with_value=options.with_value,
                          has_aux=options.has_aux)
    # dropout's masks are drawn again in the backward from their seeds, never saved
    graph = clock.run("simplify", lambda g: regenerate_random(simplify(g)), joint or forward)
    before_remat = None
    if options.remat:          # cheap pointwise values recomputed in the backward instead of saved
        before_remat, graph = graph, clock.run("remat", rematerialize, graph)
    carry = check_carry(graph, options.carry, options.grad_argnums)
    compiled = Compiled(options, forward, joint, before_remat, graph, carry, seconds=clock.seconds)
    return with_kernels(compiled) if options.target is not None else compiled


def with_kernels(compiled, target=None):
    """The kernel passes on a compiled graph: fuse, lower, codegen, plan_memory. `target`
    (default: the compile's own) gives a graph compiled without one (the reference backend)
    the kernels it would run, for reports and pictures."""
    target = target_named(target) or compiled.target or TARGETS["interpret"]
    options = replace(compiled.options, target=target)
    clock = _Stopwatch(compiled.seconds)
    graph, carried = compiled.graph, carried_nodes(compiled.graph, compiled.carry)
    fusion = clock.run("fuse", fuse, graph) if options.fuse else None
    schedule = clock.run("lower", lower, graph, fusion, carried)
    names = kernel_names(value_names(graph))
    sources = clock.run("codegen", lambda: tuple(generate(k, names, target) for k in schedule.kernels))
    memory = clock.run("plan_memory", _planned, schedule, ALIGNMENT[target.device], carried)
    return replace(compiled, options=options, fusion=fusion, schedule=schedule, names=names, sources=sources,
                   memory=memory, seconds=clock.seconds)


def compile_kernels(graph, target="interpret", carry=(), fuse=True):
    """Only the kernel passes, on a graph that is already what should run (a hand-made or
    hand-transformed graph: tutorials compare such graphs' kernels, the gradient check
    lowers one kernel per node with fuse=False)."""
    options = Options(target=target_named(target), fuse=fuse, carry=tuple(carry))
    return with_kernels(Compiled(options, graph, None, None, graph, check_carry(graph, carry)))


def _planned(schedule, alignment, carried):
    """The memory plan, verified: no two buffers live at once share a byte of the arena."""
    plan = plan_memory(schedule, alignment=alignment, carried=carried)
    verify(plan)
    return plan


def check_carry(graph, carry, grad_argnums=None):
    """compile's `carry` ({input position: output position}) as checked, sorted pairs."""
    if not carry:
        return ()
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
    return tuple(pairs)
