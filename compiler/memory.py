"""Memory planning: one arena for every buffer a compiled step writes.

The kernel schedule runs in order; step i is kernel i. Every kernel output is a buffer, and
a buffer is *live* from the step that writes it to the last step whose kernel reads it
(through any view of it: a transpose or a broadcast reads the same memory). Values the
forward saves for the backward need no special case: they are simply read late, so they stay
live long. Graph inputs (data, parameters) and constant arrays live outside the arena, for
the whole run; so do the step's *results* (the buffers of its outputs: the loss, the
gradients), which belong to the caller once the step returns: the runtime gives each call
fresh result buffers and the kernels write them directly, so nothing is copied out of the
arena and the next call cannot overwrite them. (XLA's buffer assignment splits its
allocations the same way: parameters, outputs, and one "temp" arena.)

Two buffers whose lifetimes do not overlap may share memory. The planner

1. lets a pointwise kernel write its output over an input buffer *in place* when that is
   safe: same dtype and number of elements, the output spans the kernel's whole iteration
   space and the kernel reads the input only with the identity element mapping (each lane
   reads exactly the element it writes, and no other lane reads it), this kernel is the
   input's last use, and the input is not a graph output (graph inputs and constants are
   never in the arena). The pair then is one allocation (`reused_from`);
2. places the allocations greedily, each in the best-fitting gap (the smallest gap it fits,
   lowest offset on a tie; above everything when none fits) between the allocations it is
   live together with, at offsets aligned to `alignment`; it tries a few orders (largest
   first, longest-lived first, ...: ORDERS) and keeps the smallest arena.

Three numbers judge the result: `arena_bytes` (what the plan allocates),
`live_lower_bound_bytes` (the most bytes live at one step: no plan can use less) and
`no_reuse_bytes` (every buffer in its own aligned slot: what allocating without ever
freeing would take). The lower bound counts bytes as they are; the arena and no reuse count
whole alignment units, so always lower bound <= arena <= no reuse.

    plan = plan_memory(lower(graph))      # a pure function of the schedule
    verify(plan)                          # no two buffers live at once overlap
    print(plan.text())                    # 04_memory.txt

`plan_intervals` plans bare (name, size, first, last) intervals, without a graph.
"""
from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ops.errors import ChainruleError
from ops.printer import value_names

from .fusion import riders, segments
from .lower import View


class MemoryPlanError(ChainruleError, AssertionError):
    """A plan that puts two buffers live at the same step in overlapping memory."""


@dataclass(frozen=True)
class Interval:
    """One allocation to place: `size` bytes live from step `first` to step `last`, inclusive."""

    name: str
    size: int
    first: int
    last: int

    def overlaps(self, other):
        return self.first <= other.last and other.first <= self.last


def align_up(n, alignment):
    return -(-n // alignment) * alignment


# The orders a greedy placement may take the intervals in (ties: the order given). Largest
# first is the classic; longest-lived first ("by breadth") and largest area of the
# (time x bytes) rectangle first win on other lifetimes. TFLite's arena planners try several
# such strategies too; `place` keeps the smallest arena.
ORDERS = {
    "largest first": lambda t: (-t.size, t.first),
    "longest-lived first": lambda t: (-(t.last - t.first), -t.size, t.first),
    "largest bytes x steps first": lambda t: (-t.size * (t.last - t.first + 1), t.first),
    "earliest first": lambda t: (t.first, -t.size),
}


def place(intervals, alignment=64):
    """(offsets, the order that gave them): the smallest arena of the greedy best-fit placement
    over every order of ORDERS (the first order listed wins a tie)."""
    best = None
    for name in ORDERS:
        offsets = assign_offsets(intervals, alignment, name)
        end = max((o + align_up(t.size, alignment) for o, t in zip(offsets, intervals) if t.size), default=0)
        if best is None or end < best[0]:
            best = (end, offsets, name)
    return best[1], best[2]


def assign_offsets(intervals, alignment=64, order="largest first"):
    """The greedy best-fit placement: a list of offsets, one per interval, in order.

    The intervals are taken in `order` (a key of ORDERS; by default largest first, ties: the
    earlier first step, then the order given). Each goes into the
    smallest gap that holds it between the already placed intervals whose lifetimes overlap
    its own (lowest offset among equal gaps), or above all of them when no gap does. Every
    offset is a multiple of `alignment`, and every allocation takes whole alignment units.
    Empty intervals (size 0) sit at offset 0 and conflict with nothing."""
    offsets = [0] * len(intervals)
    placed = []
    key = ORDERS[order]
    firsts, lasts = [t.first for t in intervals], [t.last for t in intervals]
    taken = [align_up(t.size, alignment) for t in intervals]        # whole alignment units
    for i in sorted(range(len(intervals)), key=lambda i: (*key(intervals[i]), i)):
        item = intervals[i]
        if item.size == 0:
            continue
        first, last = item.first, item.last
        busy = sorted((offsets[j], offsets[j] + taken[j]) for j in placed if firsts[j] <= last and first <= lasts[j])
        best, best_gap, cursor = None, None, 0
        for start, end in busy:
            gap = start - cursor
            if gap >= item.size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            if end > cursor:
                cursor = end
        offsets[i] = cursor if best is None else best
        placed.append(i)
    return offsets


def peak(intervals):
    """(the most bytes live at one step, the first step where that many are), over intervals."""
    if not intervals:
        return 0, None
    steps = max(i.last for i in intervals) + 2
    delta = np.zeros(steps, dtype=np.int64)
    for i in intervals:
        delta[i.first] += i.size
        delta[i.last + 1] -= i.size
    live = np.cumsum(delta)[:-1]
    step = int(np.argmax(live))
    return int(live[step]), step


@dataclass
class BufferRow:
    """One buffer of the plan: a row of 04_memory.txt."""

    name: str
    bytes: int
    first: int
    last: int
    offset: int = 0
    reused_from: str | None = None       # the buffer whose memory this one writes over, in place
    type: str = ""
    node: object = field(default=None, compare=False, repr=False)


@dataclass
class StateUpdate:
    """A value the step carries to its next call (a parameter, an optimizer's moment): the
    kernel at `step` writes its new value over the old one when `in_place`, else into a
    fresh buffer that becomes the state (`why` says what prevented writing over it)."""

    name: str                   # the new value
    state: str                  # the input it replaces
    type: str
    bytes: int
    step: int | None            # the kernel writing it (None: no kernel, a literal or an input)
    in_place: bool
    why: str = ""
    node: object = field(default=None, compare=False, repr=False)
    source: object = field(default=None, compare=False, repr=False)


@dataclass
class MemoryPlan:
    rows: list                           # BufferRow per planned buffer, in the order they are written
    arena_bytes: int
    live_lower_bound_bytes: int
    no_reuse_bytes: int
    alignment: int = 64
    steps: int = 0                       # kernels in the schedule
    peak_step: int | None = None         # a step where the lower bound's bytes are live
    persistent: list = field(default_factory=list)   # (name, type, bytes) outside the arena
    results: list = field(default_factory=list)      # (name, type, bytes): output buffers, outside it too
    order: str = "largest first"                     # the greedy placement's order that won (ORDERS)
    updates: list = field(default_factory=list)      # StateUpdate per carried value (compile(carry=...))

    @property
    def offsets(self):
        """node -> byte offset in the arena (for the runtime)."""
        return {row.node: row.offset for row in self.rows if row.node is not None}

    @property
    def in_place(self):
        """The nodes written over one of their kernel's inputs (their memory is not fresh)."""
        return ({row.node for row in self.rows if row.reused_from is not None and row.node is not None}
                | set(self.written_over))

    @property
    def written_over(self):
        """node -> the carried input (a parameter, an optimizer state) whose buffer it is written over."""
        return {u.node: u.source for u in self.updates if u.in_place}

    def row(self, name):
        return next(r for r in self.rows if r.name == name)

    def text(self):
        """The plan as a table a learner reads top to bottom (04_memory.txt)."""
        lines = [f"# memory plan: {len(self.rows)} buffers in one arena, offsets aligned to {self.alignment} bytes",
                 "# step i is kernel i (kernels/NN_*.py); a buffer is live from the step that writes it to the",
                 "# last step that reads it.",
                 "# reused-from: a pointwise kernel wrote this buffer in place over that one (its last use)."]
        if self.persistent:
            total = sum(b for _, _, b in self.persistent)
            lines += textwrap.wrap(f"outside the arena, live throughout: {len(self.persistent)} inputs and "
                                   f"constants, {total} bytes ({', '.join(n for n, _, _ in self.persistent)})",
                                   96, initial_indent="# ", subsequent_indent="#   ")
        if self.results:
            total = sum(b for _, _, b in self.results)
            lines += textwrap.wrap(f"outside the arena, fresh for every call and handed to the caller: "
                                   f"{len(self.results)} result buffers, {total} bytes "
                                   f"({', '.join(n for n, _, _ in self.results)})",
                                   96, initial_indent="# ", subsequent_indent="#   ")
        if self.updates:
            done = [u for u in self.updates if u.in_place]
            lines += textwrap.wrap(
                f"the persistent part, kept on the device between calls: {len(self.updates)} carried values "
                f"({sum(u.bytes for u in self.updates)} bytes: {', '.join(u.state for u in self.updates)}); "
                f"{len(done)} written in place over their old "
                f"value ({', '.join(f'{u.name} over {u.state} at step {u.step}' for u in done) or 'none'})",
                96, initial_indent="# ", subsequent_indent="#   ")
            for u in self.updates:
                if not u.in_place:
                    lines += textwrap.wrap(f"{u.name}: a fresh buffer becomes the new {u.state} ({u.why})", 96,
                                           initial_indent="#   ", subsequent_indent="#     ")
        lines.append("")
        header = ("buffer", "type", "bytes", "first", "last", "offset", "reused-from")
        table = [header] + [(r.name, r.type, str(r.bytes), str(r.first), str(r.last), str(r.offset),
                             r.reused_from or "-") for r in self.rows]
        widths = [max(len(row[c]) for row in table) for c in range(len(header))]
        for row in table:
            cells = [cell.ljust(w) if c < 2 or c == 6 else cell.rjust(w)
                     for c, (cell, w) in enumerate(zip(row, widths))]
            lines.append("  ".join(cells).rstrip())
        reused = sum(1 for r in self.rows if r.reused_from)
        at = f", at step {self.peak_step}" if self.peak_step is not None else ""
        lines += ["",
                  f"arena        {self.arena_bytes:>12} bytes   what this plan allocates",
                  f"lower bound  {self.live_lower_bound_bytes:>12} bytes   the most bytes live at once{at}",
                  f"no reuse     {self.no_reuse_bytes:>12} bytes   every buffer in its own slot",
                  ""]
        lines += textwrap.wrap(
            "No plan can use less than the lower bound: those bytes are all needed at the same step. The arena "
            "is larger by alignment padding and by gaps the greedy placement could not fill (best fit, taking "
            f"the buffers {self.order}: the best of {len(ORDERS)} orders); no reuse is what "
            f"allocating without ever freeing would take. {reused} of {len(self.rows)} buffers were written in "
            "place.", 96)
        return "\n".join(lines) + "\n"


def _finish(rows, groups, alignment, steps, persistent=(), results=(), updates=()):
    """Place `groups` (intervals, one per allocation) and fill in the rows' offsets."""
    placed, order = place(groups, alignment)
    offsets = dict(zip((g.name for g in groups), placed))
    ends = [offsets[g.name] + align_up(g.size, alignment) for g in groups if g.size]
    lower, peak_step = peak(groups)
    return offsets, MemoryPlan(rows, max(ends, default=0), lower, sum(align_up(r.bytes, alignment) for r in rows),
                               alignment, steps, peak_step, list(persistent), list(results), order, list(updates))


def plan_intervals(intervals, alignment=64):
    """A MemoryPlan of bare intervals, each its own allocation (no in-place reuse)."""
    names = [i.name for i in intervals]
    assert len(set(names)) == len(names), "interval names must be unique"
    rows = [BufferRow(i.name, i.size, i.first, i.last) for i in intervals]
    offsets, plan = _finish(rows, list(intervals), alignment, max((i.last + 1 for i in intervals), default=0))
    for row in rows:
        row.offset = offsets[row.name]
    return plan


def _nbytes(node):
    return node.numel * np.dtype(node.dtype).itemsize


def _identity_read(view, out):
    """Does this view read, for each element of `out`, the base's element at the same place?"""
    return (view.offset == 0 and view.is_contiguous and tuple(view.shape) == tuple(out.shape)
            and view.base.numel == out.numel)


def plan_memory(schedule, alignment=64, names=None, carried=()):
    """The memory plan of a lowered Schedule: liveness, in-place reuse, arena offsets.
    `carried`: (input node, output node) pairs whose output feeds that input at the next
    call (compile(carry=...)): written over the input where safe (see `_state_update`)."""
    graph = schedule.graph
    names = names or value_names(graph)
    steps = len(schedule.kernels)
    written, last_read = {}, {}
    for step, kernel in enumerate(schedule.kernels):
        for view in kernel.inputs.values():
            if isinstance(view, View):
                last_read[view.base] = step
        for node in kernel.outputs:
            written[node] = step
    results = []                 # buffers of the graph's outputs: the caller's, outside the arena
    for node in graph.outputs:
        where = schedule.location(node)
        if isinstance(where, View) and where.base in written and where.base not in results:
            results.append(where.base)
    output_views = Counter(getattr(schedule.location(o), "base", None) for o in graph.outputs)   # buffer -> outputs
    updates = [_state_update(schedule, source, new, written, last_read, names, output_views)
               for source, new in carried]
    over = {u.node for u in updates if u.in_place}
    results = [node for node in results if node not in over]      # they live in the persistent part
    protected = set(results) | over
    last = {node: max(step, last_read.get(node, step)) for node, step in written.items()}

    # in place: an output takes over an input buffer of its own pointwise kernel
    reused_from, taken = {}, set()
    for step, kernel in enumerate(schedule.kernels):
        if kernel.family != "pointwise":
            continue
        reads = {}
        for view in kernel.inputs.values():
            if isinstance(view, View):
                reads.setdefault(view.base, []).append(view)
        space = max(n.numel for n in kernel.nodes)
        for out in kernel.outputs:
            if out.numel != space or out in protected:     # a lane per element of out, none writing it twice
                continue
            for base, views in reads.items():
                if (base in written and base not in protected and base not in taken and last[base] == step
                        and base.dtype == out.dtype and base.numel == out.numel
                        and all(_identity_read(v, out) for v in views)):
                    reused_from[out] = base
                    taken.add(base)
                    break

    # allocations: a chain of in-place buffers is one interval
    written = {node: step for node, step in written.items() if node not in protected}
    owner = {}
    for node in written:
        owner[node] = owner[reused_from[node]] if node in reused_from else node
    span = {}
    for node in written:
        root = owner[node]
        first, end = span.get(root, (written[root], last[root]))
        span[root] = (first, max(end, last[node]))
    groups = [Interval(names[root], _nbytes(root), first, end) for root, (first, end) in span.items()]
    rows = [BufferRow(names[n], _nbytes(n), written[n], last[n], 0,
                      names[reused_from[n]] if n in reused_from else None, n.type_str, n) for n in written]
    states = {source for source, _ in carried}
    persistent = [(names[n], n.type_str, _nbytes(n)) for n in schedule.buffers
                  if n not in written and n not in protected and n not in states]
    offsets, plan = _finish(rows, groups, alignment, steps, persistent,
                            [(names[n], n.type_str, _nbytes(n)) for n in results], updates)
    for row in rows:
        row.offset = offsets[names[owner[row.node]]]
    return plan


def _state_update(schedule, source, new, written, last_read, names, output_views):
    """Can the kernel that computes `new` write it over `source`, the input it replaces (a
    parameter and its updated value)? Yes when, like an in-place pointwise kernel above, each
    lane (each output element of a GEMM's epilogue: the optimizer's update fused into the
    weight-gradient kernel) reads `source` only at the element it writes, and neither a later
    kernel, nor another part of the same launch, nor a GEMM's reduction reads `source`: then
    no one can see the old value overwritten. Else the new value goes to a fresh buffer,
    which the runtime keeps as the state instead (no copy either way)."""
    where = schedule.location(new)

    def update(step, why=""):
        base = where.base if isinstance(where, View) else new
        return StateUpdate(names[new], names[source], new.type_str, _nbytes(source), step, not why, why, base, source)

    if not isinstance(where, View) or where.base not in written:
        return update(None, "no kernel writes it: it is a constant or an input")
    base, step = where.base, written[where.base]
    kernel = schedule.kernels[step]
    if kernel.family in ("pointwise", "horizontal"):
        lanes = next(p for p in segments(kernel.nodes) if base in p)
        space = max(n.numel for n in lanes)
    elif kernel.family in ("matmul", "conv"):             # the epilogue runs at the output's positions
        riding = riders(kernel.nodes)
        lanes = [kernel.nodes[0]] + [n for n in kernel.nodes[1:] if n not in riding]
        space = kernel.nodes[0].numel
    else:
        return update(step, f"written by a {kernel.family} kernel: a program there reads whole rows or windows, and "
                            "that it reads the old value only where it writes the new is not proved")
    if where.offset or not where.is_contiguous or base.numel != source.numel or base.dtype != source.dtype:
        return update(step, "it is not laid out like the state")
    if output_views[base] > 1:
        return update(step, "the same buffer is another output too")
    if last_read.get(source, -1) > step:
        return update(step, f"kernel {last_read[source]} still reads the old value after kernel {step} writes the new")
    if base not in lanes or base.numel != space:
        return update(step, "the kernel's lanes do not map one to one onto its elements")
    for node in kernel.nodes:
        for i in node.inputs:
            view = kernel.inputs.get(i)
            if not (isinstance(view, View) and view.base is source):
                continue
            if node not in lanes:
                return update(step, "another part of the same launch reads the old value")
            if node is kernel.nodes[0] and kernel.family in ("matmul", "conv"):
                return update(step, "the GEMM reads the old value across its reduction")
            if not _identity_read(view, base):
                return update(step, "a lane reads the old value at an element it does not write")
    return update(step)


def verify(plan):
    """Prove that no two buffers live at the same step share a byte of the arena (an in-place
    pair, one written over the other at the other's last use, excepted); raise
    MemoryPlanError naming the two buffers otherwise. Also checks alignment and bounds."""
    for r in plan.rows:
        if r.bytes and r.offset % plan.alignment:
            raise MemoryPlanError(f"buffer {r.name} is at offset {r.offset}, not a multiple of {plan.alignment}")
        if r.bytes and (r.offset < 0 or r.offset + r.bytes > plan.arena_bytes):
            raise MemoryPlanError(f"buffer {r.name} [{r.offset}, {r.offset + r.bytes}) lies outside the arena of "
                                  f"{plan.arena_bytes} bytes")
    rows = sorted((r for r in plan.rows if r.bytes), key=lambda r: (r.first, r.last))
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if b.first > a.last:
                break
            if a.offset < b.offset + b.bytes and b.offset < a.offset + a.bytes and not _in_place_pair(a, b):
                raise MemoryPlanError(
                    f"buffers {a.name} and {b.name} are live at the same time (steps {a.first}-{a.last} and "
                    f"{b.first}-{b.last}) but overlap in the arena ([{a.offset}, {a.offset + a.bytes}) and "
                    f"[{b.offset}, {b.offset + b.bytes}))")
    return True


def _in_place_pair(a, b):
    for x, y in ((a, b), (b, a)):
        if (y.reused_from == x.name and x.last == y.first and x.offset == y.offset and x.bytes == y.bytes):
            return True
    return False
