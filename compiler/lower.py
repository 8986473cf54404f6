"""Lowering: from a graph to a schedule of kernels over buffers and views.

Every value lives in a buffer (a contiguous array) or is a *view* of one: reshape of a
contiguous value, permute, expand (broadcast) and slice only change how the same memory is
read, so they cost no kernel; the consumer's generated code reads through the view's
strides. Scalar constants become literals inside kernels. Every other node becomes a kernel
(in this lowering, one node per kernel; a `Kernel` holds a list of nodes so that fusion can
hand it a group).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from ops.families import VIEW_OPS
from ops.primitive import REGISTRY

from .fusion import riders, space_of


def contiguous_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    """How to read a value: buffer `base` (a node holding contiguous memory), an element
    offset and one stride per dimension (0 for a broadcast dimension)."""

    base: object
    shape: tuple
    strides: tuple
    offset: int = 0

    @classmethod
    def of(cls, node):
        return cls(node, node.shape, contiguous_strides(node.shape), 0)

    @property
    def is_contiguous(self):
        return self.offset == 0 and all(st == cs for st, cs, n in zip(self.strides, contiguous_strides(self.shape),
                                                                       self.shape) if n != 1)

    def permute(self, dims):
        return View(self.base, tuple(self.shape[d] for d in dims), tuple(self.strides[d] for d in dims), self.offset)

    def expand(self, shape):
        lead = len(shape) - len(self.shape)
        strides = [0] * lead + [0 if n == 1 and m != 1 else s
                                for n, m, s in zip(self.shape, shape[lead:], self.strides)]
        return View(self.base, tuple(shape), tuple(strides), self.offset)

    def slice(self, starts, steps, shape):
        offset = self.offset + sum(a * s for a, s in zip(starts, self.strides))
        return View(self.base, tuple(shape), tuple(s * c for s, c in zip(self.strides, steps)), offset)

    def reshape(self, shape):
        assert self.is_contiguous
        return View(self.base, tuple(shape), contiguous_strides(shape), self.offset)


@dataclass(frozen=True)
class Literal:
    """A scalar constant, written into the kernel's source."""

    value: object
    dtype: str


@dataclass
class Kernel:
    """One launch: computes `nodes` (in order), reading `inputs` through their views and
    writing `outputs` as contiguous buffers. A fused matmul or conv kernel has its GEMM as
    `nodes[0]` and its epilogue after it; its outputs may leave the GEMM's own value out."""

    index: int
    family: str
    nodes: list
    inputs: dict = field(default_factory=dict)      # node -> View | Literal
    outputs: list = field(default_factory=list)
    space: tuple = ()                               # a fused group's iteration space (see fusion.space_of)
    direction: str = ""                             # fwd, bwd, upd, or a mix (bwd_upd): see node_directions

    @property
    def origin(self):
        """What the kernel computes, in a word: its node's op, or for a fused group the
        composites its nodes come from (softmax, layer_norm, conv2d_relu)."""
        riding = riders(self.nodes)           # a bias gradient riding along a GEMM: named as such
        nodes = [n for n in self.nodes if n not in riding]
        if len(nodes) == 1:
            return nodes[0].op + ("_bias_grad" if riding else "")
        parts = list(dict.fromkeys(n.scope[0] if n.scope else n.op for n in nodes if n.op != "expand"))
        parts += ["bias_grad"] if riding else []
        return "_".join(parts) if len(parts) <= 3 else f"{parts[0]}_to_{parts[-1]}"

    @property
    def label(self):
        """Its direction and what it computes: fwd_linear_relu, bwd_linear_relu, upd_adam."""
        return f"{self.direction}_{self.origin}" if self.direction else self.origin

    @property
    def name(self):
        """k, the launch index, the label: k03_fwd_linear_relu, k09_bwd_linear_relu."""
        return f"k{self.index:02d}_{self.label}"

    @property
    def root(self):
        return self.nodes[-1]

    def read(self, node):
        return self.inputs[node]


@dataclass
class Schedule:
    """What runs, in order, and where every value lives."""

    graph: object
    kernels: list
    views: dict            # node -> View, for every value in memory (a buffer's own view included)
    literals: dict         # node -> Literal
    buffers: list          # nodes that own memory: inputs, constant arrays, kernel outputs
    constants: dict        # node -> np.ndarray uploaded once

    def location(self, node):
        return self.literals.get(node) or self.views[node]


def lower(graph, plan=None, carried=()):
    """Graph -> Schedule: one kernel per computing node, or one per group of a FusionPlan.

    First every value gets its place (a buffer, a view of one, or a literal); then the
    kernels are put in an order where each runs after the kernels whose buffers it reads.
    `carried`: (input, output) pairs whose output will replace that input (a parameter and its
    update, compile(carry=...)); the output's kernel then also runs after every other reader
    of the input where it can, so it may write over it (compiler/memory.py)."""
    views, literals, buffers, constants = {}, {}, [], {}
    groups = [g for g in plan.groups if len(g) > 1] if plan is not None else []
    fused = {n for g in groups for n in g}
    users = graph.users() if groups else {}
    stored = {n for g in groups for n in g if n in graph.outputs or any(u not in set(g) for u in users[n])}
    singles = []
    for node in graph.nodes:
        if node.op == "input":
            views[node] = View.of(node)
            buffers.append(node)
        elif node.is_scalar_const:
            literals[node] = Literal(node.attrs["value"], node.dtype)
        elif node.op == "const":
            views[node] = View.of(node)
            buffers.append(node)
            constants[node] = np.asarray(node.attrs["value"], dtype=node.dtype)
        elif node in fused:
            if node in stored:
                views[node] = View.of(node)
                buffers.append(node)
        elif node.op in VIEW_OPS and _as_view(node, views, literals) is not None:
            views[node] = _as_view(node, views, literals)
        else:
            singles.append(node)
            views[node] = View.of(node)
            buffers.append(node)
    units = [_kernel([n], [n], "copy" if n.op in VIEW_OPS else REGISTRY[n.op].family, views, literals)
             for n in singles]
    for g in groups:
        space = space_of(g)
        unit = _kernel(g, [n for n in g if n in stored], space[0], views, literals)
        unit.space = space[1:]
        units.append(unit)
    kernels = _in_dependency_order(units, {n: i for i, n in enumerate(graph.nodes)}, carried, views)
    direction = node_directions(graph)
    for index, kernel in enumerate(kernels):
        kernel.index = index
        kernel.direction = kernel_direction(kernel.nodes, direction)
    return Schedule(graph, kernels, views, literals, buffers, constants)


DIRECTIONS = ("fwd", "bwd", "upd")


def node_directions(graph):
    """node -> "fwd", "bwd" or "upd". Autodiff marks every node it creates role="backward":
    those are "bwd". A node of the user's own code that is computed from a gradient (in a
    training step, the optimizer's update of the parameters and its state) is "upd", and so is
    a forward node that only the update reads; every other node is the forward, "fwd"."""
    direction = {}
    for node in graph.nodes:
        if node.role == "backward":
            direction[node] = "bwd"
        elif any(direction.get(i) in ("bwd", "upd") for i in node.inputs):
            direction[node] = "upd"
        else:
            direction[node] = "fwd"
    users, outputs = graph.users(), set(graph.outputs)
    for node in reversed(graph.nodes):      # what only the update reads (momentum x the old buffer) is the update's
        if direction[node] == "fwd" and node not in outputs and users[node] and \
                all(direction[u] == "upd" for u in users[node]):
            direction[node] = "upd"
    return direction


def kernel_direction(nodes, direction):
    """A kernel's direction: its nodes' directions, in the order fwd, bwd, upd, joined by "_"
    (a gradient fused with the update that reads it: "bwd_upd")."""
    present = {direction[n] for n in nodes if n in direction}
    return "_".join(d for d in DIRECTIONS if d in present)


def _kernel(nodes, outputs, family, views, literals):
    members = set(nodes)
    kernel = Kernel(0, family, list(nodes))
    for node in nodes:
        for i in node.inputs:
            if i not in members and i not in kernel.inputs:
                kernel.inputs[i] = literals.get(i) or views[i]
    kernel.outputs = list(outputs)
    return kernel


def _in_dependency_order(units, position, carried=(), views=None):
    """Kernels ordered so that each comes after the writers of the buffers it reads; among
    the ready ones, the one whose first node comes first in the graph. A carried value's
    writer also waits for the other readers of the value it replaces (a write-after-read
    edge), unless such a reader depends on the writer."""
    writer = {out: k for k, unit in enumerate(units) for out in unit.outputs}
    needs = {k: {writer[v.base] for v in unit.inputs.values() if isinstance(v, View) and v.base in writer} - {k}
             for k, unit in enumerate(units)}
    for source, new in carried:
        where = views.get(new)
        if where is None or where.base not in writer:
            continue
        w = writer[where.base]
        for k, unit in enumerate(units):
            if k != w and any(isinstance(v, View) and v.base is source for v in unit.inputs.values()) \
                    and w not in _upstream(k, needs):
                needs[w].add(k)
    waiting_on_me = {k: [] for k in range(len(units))}
    for k, deps in needs.items():
        for d in deps:
            waiting_on_me[d].append(k)
    ready = [(position[units[k].nodes[0]], k) for k, deps in needs.items() if not deps]
    heapq.heapify(ready)
    order = []
    while ready:
        _, k = heapq.heappop(ready)
        order.append(units[k])
        for j in waiting_on_me[k]:
            needs[j].discard(k)
            if not needs[j]:
                heapq.heappush(ready, (position[units[j].nodes[0]], j))
    assert len(order) == len(units), "the kernels depend on each other in a cycle (a fusion bug)"
    return order


def _upstream(k, needs):
    """The kernels k depends on, directly or not."""
    seen, stack = set(), [k]
    while stack:
        for d in needs[stack.pop()]:
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


def _as_view(node, views, literals):
    """The view a layout node reads as, or None when it needs a kernel (a reshape of a
    non-contiguous view, or a view of a literal)."""
    source = node.inputs[0]
    if source in literals:
        return None
    v = views[source]
    a = node.attrs
    if node.op == "permute":
        return v.permute(a["dims"])
    if node.op == "expand":
        return v.expand(a["shape"])
    if node.op == "slice":
        return v.slice(a["starts"], a["steps"], node.shape)
    if node.op == "reshape":
        return v.reshape(a["shape"]) if v.is_contiguous else _reshape_strided(v, a["shape"])
    return None


def _reshape_strided(view, shape):
    """A reshape that only adds or removes size-1 dimensions keeps any strides."""
    old = [(n, s) for n, s in zip(view.shape, view.strides) if n != 1]
    if [n for n, _ in old] != [n for n in shape if n != 1]:
        return None
    strides, it = [], iter(old)
    for n in shape:
        strides.append(next(it)[1] if n != 1 else 0)
    return View(view.base, tuple(shape), tuple(strides), view.offset)
