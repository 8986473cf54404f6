"""Fusion: which nodes of a graph share one kernel, and for every pair that does not, why.

Without fusion every node is a kernel that reads its inputs from memory and writes its
result back. Pointwise nodes over the same elements can instead run in one kernel that
keeps the intermediates in registers: `exp(x - m) / s` reads x, m and s once and writes
one result. This pass groups them, greedily, in graph order (the epilogues last):

* a pointwise consumer joins the group of a pointwise producer (vertical fusion), also
  through an `expand` (a broadcast only repeats values, it does not move them);
* never when the merged group would depend on itself through a node outside it (a cycle);
* never beyond `max_group` nodes;
* a producer whose value is also needed elsewhere must have the group's shape (it is
  stored, and a group stores whole elements of its iteration space);
* last, *siblings*: pointwise kernels that read the same buffer and do not depend on each
  other share one launch, each over its own elements (the optimizer's update of every
  parameter: one launch, like PyTorch's multi-tensor `foreach` kernels);
* a matmul or convolution (a GEMM) may head a group: its pointwise consumers join it as an
  *epilogue*, applied to the accumulator tile in registers after the K loop and before the
  store (bias add, residual add, activation). The epilogue iterates over the GEMM's output:
  every member has its shape or broadcasts into it, stored members have it, and the other
  inputs of the epilogue are read at the tile's output positions. One GEMM per group, and a
  GEMM never joins as a consumer (no prologue: its operands are loaded as they are).
  Epilogues are merged after every other pair, a consumer's group whole: a row kernel
  (batch norm's statistics of a conv's output) is never split up to feed an epilogue.

It returns a `FusionPlan`: the groups, and the reason for every producer/consumer pair
that stayed apart, in words (`03_fusion.txt`).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ops.errors import ShapeError
from ops.families import GEMM_FAMILIES, POINTWISE_FAMILIES, ROW_REDUCTIONS, SOURCE_OPS, VIEW_OPS, WINDOW_HEADS
from ops.primitive import REGISTRY
from ops.primitives import broadcast_shapes
from ops.printer import value_names

from .graphs import connected_parts


@dataclass
class FusionPlan:
    graph: object
    groups: list                                   # lists of nodes, in graph order
    group_of: dict                                 # node -> index into groups
    rejected: list = field(default_factory=list)   # (producer, consumer, reason)

    def text(self, schedule=None):
        """03_fusion.txt: every kernel group, then every pair that did not fuse and why. With
        the lowered `schedule`, the groups are numbered and ordered as the kernels launch
        (kernels/NN_label.py); alone, in the order fusion made them."""
        names = value_names(self.graph)
        groups = [g for g in self.groups if _computes(g)]
        numbered = list(enumerate(groups))
        if schedule is not None:
            launch = {n: k for k in schedule.kernels for n in k.nodes}
            numbered = sorted(((launch[g[0]].index, g) for g in groups), key=lambda pair: pair[0])
        lines = [f"{len(groups)} kernels for {self.graph.name} ({sum(len(g) for g in self.groups)} nodes)", ""]
        for index, group in numbered:
            where = sorted({str(n.source) for n in group if n.source})
            riding = "".join(f"; {names[r]} rides along the {group[0].op}'s K loop" for r in riders(group))
            parts = len(segments(group)) if _sibling_candidate(group) else 1
            riding += f"; {parts} independent parts in one launch (siblings)" if parts > 1 else ""
            label = f" ({launch[group[0]].index:02d}_{launch[group[0]].label})" if schedule is not None else ""
            lines.append(f"kernel {index}{label}: {', '.join(names[n] for n in group)}  "
                         f"[{' '.join(n.op for n in group)}]  {', '.join(where)}{riding}")
        lines += ["", "did not fuse:"]
        for producer, consumer, reason in self.rejected:
            lines.append(f"  {names[producer]} ({producer.op}) -> {names[consumer]} ({consumer.op}): {reason}")
        if not self.rejected:
            lines.append("  (every pair fused)")
        return "\n".join(lines) + "\n"


def _computes(group):
    return any(n.op not in VIEW_OPS for n in group)


ROW_LIMIT = 4096          # a row kernel keeps rows up to this long in registers; longer ones it walks in blocks
WHOLE_LIMIT = 16384       # a kernel that also sums over all its rows is a single program holding them all


def _numel(shape):
    total = 1
    for n in shape:
        total *= n
    return total


def row_shapes(shape, dims):
    """The two shapes a row value (one value per row of `shape` reduced over `dims`) can
    have: with the reduced dims kept as 1, or dropped."""
    keepdim = tuple(1 if d in dims else n for d, n in enumerate(shape))
    dropped = tuple(n for d, n in enumerate(shape) if d not in dims)
    return keepdim, dropped


def is_total(node, shape, dims):
    """A reduction of one-value-per-row data over all of it (cross_entropy's mean over the
    batch): in a row kernel, it sums across the rows a single program holds."""
    return (node.op in ROW_REDUCTIONS and node.shape == () and node.inputs[0].shape in row_shapes(shape, dims)
            and node.inputs[0].shape != shape)


def unit_reshape(node):
    """A reshape that only adds or removes dimensions of size 1 ((64,) -> (64, 1)): it keeps
    every element where it was, so inside a kernel it is a new name for the same registers."""
    return node.op == "reshape" and [n for n in node.inputs[0].shape if n != 1] == [n for n in node.shape if n != 1]


def _fusable_member(node):
    """Can this node live inside a pointwise group, or a row group around a reduction?"""
    if node.op == "expand" or node.op in ROW_REDUCTIONS or unit_reshape(node):
        return True
    return REGISTRY[node.op].family in POINTWISE_FAMILIES or node.op in SOURCE_OPS


def _takes_epilogue(node):
    """Kernels that pointwise consumers may join as an epilogue: matmul and conv (on the
    accumulator tile), and the window kernels whose lanes each finish one output element."""
    return node.op in REGISTRY and (REGISTRY[node.op].family in GEMM_FAMILIES or node.op in WINDOW_HEADS)


def rides_along(reduction, gemm):
    """Which operand of `gemm` (0: A, 1: B) `reduction` sums over exactly the GEMM's own
    reduction dimensions, or None. Such a sum (a bias gradient: Σ over the batch of the
    output gradient, next to the weight gradient that reads the same tensor) can *ride
    along* the GEMM: its K loop already loads every element of that operand, tile by tile,
    so adding up the tile costs no extra read. cuBLASLt's BGRAD epilogues do the same."""
    if reduction.op != "reduce_sum" or reduction.dtype != gemm.dtype:
        return None
    x, dims = reduction.inputs[0], tuple(reduction.attrs["dims"])
    kept = [n for n in reduction.shape if n != 1]
    if gemm.op == "matmul" and len(gemm.shape) == 2 and gemm.inputs[0] is not gemm.inputs[1]:
        a, b = gemm.inputs          # A is (M, K), B is (K, N): either may be a transposed view of x
        if _sums_over_k(x, dims, a, 1) and kept == [n for n in a.shape[:1] if n != 1]:
            return 0
        if _sums_over_k(x, dims, b, 0) and kept == [n for n in b.shape[1:] if n != 1]:
            return 1
    if gemm.op == "conv2d_grad_weight" and x is gemm.inputs[1] and dims == (0, 2, 3) and gemm.inputs[0] is not x:
        return 0                       # g is A: rows are the output channels, k runs over (n, out_h, out_w)
    return None


def _sums_over_k(x, dims, operand, k):
    """Is Σ over `dims` of x the operand's sum over its K axis `k`? Directly, or through the
    transpose the operand is of x (the weight gradient dyᵀ @ x of a Linear layer)."""
    if x is operand:
        return dims == (k,)
    transposed = operand.op == "permute" and operand.attrs["dims"] == (1, 0) and operand.inputs[0] is x
    return transposed and dims == (1 - k,)


def riders(group):
    """{reduction: operand} of the reductions riding along the group's GEMM (see rides_along)."""
    gemm = next((n for n in group if _takes_epilogue(n)), None)
    if gemm is None:
        return {}
    found = {n: rides_along(n, gemm) for n in group if n is not gemm}
    return {n: k for n, k in found.items() if k is not None}


def _max_pool_pair(node):
    """window_gather(x, window_argmax(x)) with the same windows: max_pool2d's forward."""
    if node.op != "window_gather":
        return False
    x, offsets = node.inputs
    return offsets.op == "window_argmax" and offsets.inputs[0] is x and offsets.attrs == node.attrs


def space_of(group):
    """The iteration space of a group: ("matmul" or "conv", shape) for a GEMM with its
    epilogue (the GEMM's output shape), ("rows", shape, dims) around its reductions, or
    ("pointwise", shape)."""
    if any(n.op == "window_argmax" for n in group):
        return ("window",)
    if _sibling_candidate(group) and len(segments(group)) > 1:
        return ("horizontal",)
    gemms = [n for n in group if _takes_epilogue(n)]
    if gemms:
        return (REGISTRY[gemms[0].op].family, gemms[0].shape)
    reductions = [n for n in group if n.op in ROW_REDUCTIONS]
    if reductions:      # the rows are those of the reduction over the largest input
        r = max(reductions, key=lambda n: (n.inputs[0].numel, -n.id))
        return ("rows", r.inputs[0].shape, tuple(r.attrs["dims"]))
    return ("pointwise", broadcast_shapes(*(n.shape for n in group)))


def fuse(graph, max_group=48):
    """Group the graph's pointwise nodes into kernels; see the module docstring."""
    users = graph.users()
    outputs = set(graph.outputs)
    group_of, groups = {}, []
    rejected = []
    computing = [n for n in graph.nodes if n.op not in ("input", "const")]
    for node in computing:
        group_of[node] = len(groups)
        groups.append([node])
    order = _KernelOrder(groups, group_of, users)     # kept up to date by every merge
    # max pooling: the window_gather that reads each window at its window_argmax's offset
    # joins it, so one kernel finds every window's max and stores the value and its offset
    for node in computing:
        if _max_pool_pair(node):
            _merge(group_of[node], group_of[node.inputs[1]], groups, group_of, order)
    # a sum of a GEMM operand over the GEMM's K dims (the bias gradient beside the weight
    # gradient) rides along the GEMM's K loop; one such sum per operand
    for node in computing:
        x = node.inputs[0] if node.op == "reduce_sum" else None
        readers = [] if x is None else users[x] + [u for t in users[x] if t.op == "permute" for u in users[t]]
        for gemm in readers:            # x, or its transpose (a Linear weight's gradient dyᵀ @ x)
            group = groups[group_of[gemm]]
            operand = rides_along(node, gemm) if _takes_epilogue(gemm) else None
            if operand is None or operand in riders(group).values() or len(groups[group_of[node]]) > 1:
                continue
            merged = set(group) | {node}
            if _path_back(group + [node], merged, users, groups, group_of, order) is None:
                _merge(group_of[node], group_of[gemm], groups, group_of, order)
                break
    pairs = [(producer, node) for node in computing for producer in dict.fromkeys(node.inputs)
             if producer.op not in ("input", "const")]
    # epilogues last: a GEMM takes its consumers' groups as they are, so that a row kernel
    # around a reduction (batch norm's statistics of a conv's output) stays whole
    epilogues = [(p, c) for p, c in pairs if _takes_epilogue(p) and _fusable_member(c)]
    later = set(epilogues)
    for producer, node in [pair for pair in pairs if pair not in later] + epilogues:
        if group_of[producer] == group_of[node]:
            continue
        reason = _why_not(producer, node, groups, group_of, users, outputs, max_group, order)
        if reason:
            rejected.append((producer, node, reason))
            continue
        _merge(group_of[producer], group_of[node], groups, group_of, order)
    _fuse_siblings(graph, groups, group_of, users, max_group, order)
    position = {n: i for i, n in enumerate(graph.nodes)}
    rejected.sort(key=lambda r: position[r[1]])          # in the order of the consumers, as the graph reads
    kept = [g for g in groups if g]
    kept = [sorted(g, key=lambda n: (not _takes_epilogue(n), position[n])) for g in kept]    # a GEMM heads its group
    group_of = {n: i for i, g in enumerate(kept) for n in g}
    return FusionPlan(graph, kept, group_of, rejected)


MAX_SIBLINGS = 8            # independent kernels in one horizontal launch


def segments(group):
    """The independent parts of a group (connected through its own edges), each in group
    order: one for a vertical group, several for a horizontal one."""
    return connected_parts(group)


def _sibling_candidate(group):
    """A pointwise kernel (or a horizontal bundle of them) that may share a launch."""
    return bool(group) and all(
        n.op not in ROW_REDUCTIONS and not _takes_epilogue(n)
        and (n.op == "expand" or n.op in SOURCE_OPS or REGISTRY[n.op].family in POINTWISE_FAMILIES) for n in group)


def _fuse_siblings(graph, groups, group_of, users, max_group, order=None):
    """Sibling (horizontal) fusion: pointwise kernels that read the same buffer and do not
    depend on each other become one launch. Each keeps its own iteration space; the launch's
    programs are split among them (codegen/horizontal.py). The optimizer's update of every
    parameter is the classic case, like PyTorch's multi-tensor `foreach` kernels: one launch
    instead of one per parameter."""
    for node in graph.nodes:
        if node.is_scalar_const:            # a literal in the kernel's text: nothing is read
            continue
        own = group_of.get(node)            # a reader in the buffer's own kernel is no sibling
        readers = [g for g in dict.fromkeys(group_of[u] for u in users[node] if u in group_of)
                   if g != own and _sibling_candidate(groups[g])]
        base = readers[0] if readers else None
        for other in readers[1:]:
            merged = groups[base] + groups[other]
            parts = len(segments(merged))
            if parts != len(segments(groups[base])) + len(segments(groups[other])):
                continue                    # an edge joins them: one feeds the other, they are no siblings
            if parts > MAX_SIBLINGS or len(merged) > max_group:
                base = other                # this bundle is full: the next one starts here
                continue
            if _path_back(merged, set(merged), users, groups, group_of, order) is None:
                _merge(other, base, groups, group_of, order)


def _merge(a, b, groups, group_of, order=None):
    """Kernel a joins kernel b (and takes its place in the kernels' order)."""
    for n in groups[a]:
        group_of[n] = b
    groups[b].extend(groups[a])
    groups[a] = []
    if order is not None:
        order.merged((a, b), b)


def _why_not(producer, consumer, groups, group_of, users, outputs, max_group, order=None):
    """None if producer's group and consumer's group can be one kernel, else the reason."""
    if producer.op in VIEW_OPS and producer.op != "expand" and not unit_reshape(producer):
        return f"a {producer.op} between them changes which element each lane reads"
    if consumer.op in VIEW_OPS and consumer.op != "expand" and not unit_reshape(consumer):
        return f"the {consumer.op} reads its input in another element order"
    p_ok, c_ok = _fusable_member(producer), _fusable_member(consumer)
    p_gemm, c_gemm = _takes_epilogue(producer), _takes_epilogue(consumer)
    p_family, c_family = REGISTRY[producer.op].family, REGISTRY[consumer.op].family
    if c_gemm and (p_ok or p_gemm):
        return f"{consumer.op} is a {c_family} kernel: work joins it only after it computes, as an epilogue; " \
               "fusing a producer into its loads (a prologue) is not implemented"
    if p_gemm and not c_ok:
        return f"{consumer.op} is a {c_family} kernel: only pointwise nodes join a {p_family} kernel, as its epilogue"
    if not p_ok and not c_ok:
        return f"{producer.op} ({p_family}) and {consumer.op} ({c_family}) are kernels of their own: only pointwise " \
               "nodes fuse so far (and join matmul and conv kernels as epilogues)"
    if not p_ok and not p_gemm:
        return f"{producer.op} is a {p_family} kernel; fusing a pointwise consumer into its epilogue is implemented " \
               "for matmul, conv and the window transposes only"
    if not c_ok:
        return f"{consumer.op} is a {c_family} kernel; fusing a pointwise producer into it is not implemented yet"
    mine, theirs = groups[group_of[producer]], groups[group_of[consumer]]
    if len(mine) + len(theirs) > max_group:
        return f"the kernel would exceed {max_group} nodes"
    merged = set(mine) | set(theirs)
    gemms = [n for n in mine + theirs if _takes_epilogue(n)]
    if gemms:
        reason = _why_not_epilogue(gemms, mine + theirs, merged, users, outputs)
        if reason:
            return reason
        return _cycle_reason(mine + theirs, merged, users, groups, group_of, order)
    if any(n.op in ROW_REDUCTIONS for n in merged):
        reason = _why_not_rows(mine + theirs, merged, users, outputs)
        if reason:
            return reason
        return _cycle_reason(mine + theirs, merged, users, groups, group_of, order)
    try:
        shape = broadcast_shapes(*(n.shape for n in mine + theirs))    # the kernel's iteration space
    except ShapeError:
        return f"{producer.type_str} and {consumer.type_str} do not broadcast to one iteration space"
    for n in mine + theirs:
        if n.op == "reshape" and _aligned(n.inputs[0].shape, len(shape)) != _aligned(n.shape, len(shape)):
            return (f"the reshape {n.inputs[0].shape} -> {n.shape} moves its elements to other positions of the "
                    f"iteration space {shape} (a lane would read the wrong element)")
    return (_iteration_reason(mine + theirs, merged, users, outputs, shape, "the kernel iterates over")
            or _cycle_reason(mine + theirs, merged, users, groups, group_of, order))


def _aligned(shape, rank):
    """`shape` broadcast against an iteration space of `rank` dimensions (NumPy aligns the right)."""
    return (1,) * (rank - len(shape)) + tuple(shape)


def _why_not_epilogue(gemms, members, merged, users, outputs):
    """A GEMM and its epilogue: one GEMM, then pointwise nodes over its output's elements
    (each tile of the output is all a program holds), none of them feeding the GEMM."""
    reshapes = [n for n in members if n.op == "reshape"]
    if reshapes:
        return f"a reshape ({reshapes[0].type_str}) in the epilogue of a {gemms[0].op} is not implemented"
    if len(gemms) > 1:
        return f"the kernel would compute two GEMMs ({gemms[0].op} and {gemms[1].op}): one matmul or conv per kernel"
    gemm, = gemms
    shape = gemm.shape
    riding = riders(members)
    for n in members:
        for i in n.inputs:
            if i in riding:
                return (f"{i.op} rides along the {gemm.op}'s K loop and is complete only in the programs of the first "
                        f"row (or column) of tiles; {n.op} cannot read it in the epilogue")
    reductions = sorted((n for n in members if n.op in ROW_REDUCTIONS and n not in riding), key=lambda n: n.id)
    if reductions:
        r = reductions[0]
        return (f"the {r.op} over dims {tuple(r.attrs['dims'])} in the consumer's row kernel combines elements of "
                f"many tiles of the {gemm.op} output: the row kernel stays whole, an epilogue holds pointwise nodes "
                "only")
    for n in members:
        if n in gemm.inputs:
            return (f"{n.op} feeds the {gemm.op}: it would have to run before the K loop (a prologue), which is not "
                    "implemented")
    try:
        space = broadcast_shapes(*(n.shape for n in members if n not in riding))
    except ShapeError:
        return f"the epilogue's shapes do not broadcast to the {gemm.op} output {gemm.type_str}"
    pointwise = [n for n in members if n not in riding]
    if space != shape:
        return f"the epilogue would iterate over {space}, not over the {gemm.op} output's tiles {shape}"
    return _iteration_reason(pointwise, merged, users, outputs, shape, "the epilogue stores tiles of")


def _iteration_reason(members, merged, users, outputs, shape, space_words):
    """A kernel that visits every element of `shape` once: a source (iota, rand) must number
    its elements over that shape, and a value stored for use elsewhere must have it."""
    for n in members:
        if n.op in SOURCE_OPS and n.shape != shape:
            return f"{n.op} numbers its elements over its own shape {n.shape}, not the kernel's {shape}"
        stored = n in outputs or any(u not in merged for u in users[n])
        if stored and n.shape != shape:
            return (f"{n.op} ({n.type_str}) is also needed outside the kernel at its own shape, but {space_words} "
                    f"{shape}")
    return None


def _cycle_reason(members, merged, users, groups=None, group_of=None, order=None):
    """Would the merged kernel wait for itself? It would if a path leaves it and comes back,
    through other nodes or through other kernels (a kernel runs whole: entering it at one
    node and leaving at another counts as a path)."""
    blocker = _path_back(members, merged, users, groups, group_of, order)
    if blocker is not None:
        return f"{blocker.op} sits between them outside the kernel: fusing would make the kernel wait for itself"
    return None


def _path_back(members, merged, users, groups, group_of, order=None):
    """A node outside `merged` on a path from merged back into merged, if there is one.
    (members: merged as a list, so that the search, and the node named, is deterministic)

    The walk is depth-first from merged's readers, a kernel entered anywhere left at any
    of its nodes. With the groups, it skips the kernels placed after every kernel of merged
    in a topological order of the kernels (_KernelOrder): no path leads from those back
    into merged, so skipping them changes neither the answer nor the node named, only the
    time (the walk visits the same kernels, in the same order, up to them)."""
    places = order.places(merged) if order is not None else None
    if places is not None:
        first, last = places
        # a path back leaves merged for a kernel placed between its parts: none there, no path
        if order.nothing_between(merged, first, last):
            return None
        return _pruned_walk(members, merged, users, groups, group_of, order.position, last)
    frontier = [u for n in members for u in users[n] if u not in merged]
    seen = set()
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        family = groups[group_of[node]] if groups is not None and node in group_of else [node]
        for member in family:
            seen.add(member)
            for u in users[member]:
                if u in merged:
                    return node
                if u not in seen:
                    frontier.append(u)
    return None


def _pruned_walk(members, merged, users, groups, group_of, position, limit):
    """_path_back's walk, a kernel at a time: a node is seen once its kernel is, and a node
    whose kernel is placed after `limit` is not entered."""
    frontier = [u for n in members for u in users[n] if u not in merged]
    entered = set()
    while frontier:
        node = frontier.pop()
        g = group_of[node]
        if g in entered or position[g] > limit:
            continue
        entered.add(g)
        for member in groups[g]:
            for u in users[member]:
                if u in merged:
                    return node
                if group_of[u] not in entered:
                    frontier.append(u)
    return None


class _KernelOrder:
    """A topological order of the kernels (the groups, each one vertex) while fuse merges
    them, for _path_back to prune its walk with: built once per fuse, then updated by each
    merge (_merge). A merge never closes a cycle (fuse checks that first), so the merged
    kernel can take a place between its parts: the kernels in between that lead into it go
    before it, the rest after. `position` is None when the kernels have no such order (a
    reader in no kernel): then _path_back walks the whole graph."""

    def __init__(self, groups, group_of, users):
        self.groups, self.group_of, self.users = groups, group_of, users
        self.position, self.slots = self._topological()

    def _topological(self):
        groups, group_of, users = self.groups, self.group_of, self.users
        position = {n: i for i, n in enumerate(group_of)}        # fuse numbers the nodes in graph order
        successors, indegree = {}, {}
        for g, members in enumerate(groups):
            if members:
                successors[g] = set()
                indegree.setdefault(g, 0)
        for g in successors:
            after = successors[g]
            for m in groups[g]:
                for u in users[m]:
                    h = group_of.get(u)
                    if h is None:
                        return None, None     # a reader in no kernel: the order would not cover every path
                    if h != g and h not in after:
                        after.add(h)
                        indegree[h] = indegree.get(h, 0) + 1
        first = {g: min(position[n] for n in groups[g]) for g in successors}       # graph order where it can
        ready = [(first[g], g) for g in successors if indegree[g] == 0]
        heapq.heapify(ready)
        slots = []
        while ready:
            _, g = heapq.heappop(ready)
            slots.append(g)
            for h in successors[g]:
                indegree[h] -= 1
                if indegree[h] == 0:
                    heapq.heappush(ready, (first[h], h))
        if len(slots) != len(successors):
            return None, None                 # the kernels depend on each other in a cycle: no order
        position = [-1] * len(groups)
        for i, g in enumerate(slots):
            position[g] = i
        return position, slots

    def places(self, merged):
        """(first, last) place of the kernels `merged` is made of; None if it is not whole kernels."""
        if self.position is None:
            return None
        kernels = set(map(self.group_of.get, merged))
        if None in kernels or sum(len(self.groups[g]) for g in kernels) != len(merged):
            return None
        places = [self.position[g] for g in kernels]
        return min(places), max(places)

    def nothing_between(self, merged, first, last):
        """Is every kernel placed between `first` and `last` one of merged's own?"""
        kernels = set(map(self.group_of.get, merged))
        return all(g is None or g in kernels for g in self.slots[first + 1:last])

    def merged(self, kernels, survivor):
        """Place the kernel the `kernels` were merged into: between the first and last place
        of its parts, after the kernels in between that lead into it and before the others."""
        if self.position is None:
            return
        position, slots, group_of = self.position, self.slots, self.group_of
        places = [position[g] for g in kernels]
        first, last = min(places), max(places)
        for g in kernels:
            if g != survivor:
                position[g] = -1
        if last == first + 1:                 # side by side: the merged kernel takes either place
            slots[first], slots[last] = None, survivor
            position[survivor] = last
            return
        groups = self.groups
        before = set()                        # the kernels between that lead into the merged one
        stack = [i for m in groups[survivor] for i in m.inputs]
        while stack:
            g = group_of.get(stack.pop())
            if g is None or g in before or not first < position[g] < last or g == survivor:
                continue
            before.add(g)
            stack.extend(i for m in groups[g] for i in m.inputs)
        between = [g for g in slots[first + 1:last] if g is not None and position[g] != -1 and g != survivor]
        placed = [g for g in between if g in before] + [survivor] + [g for g in between if g not in before]
        placed = [None] * (last + 1 - first - len(placed)) + placed      # emptied places stay, as holes
        slots[first:last + 1] = placed
        for i, g in enumerate(placed, first):
            if g is not None:
                position[g] = i


def _why_not_rows(members, merged, users, outputs):
    """A row group: every reduction over the same dims of the same shape, and every member
    either a whole row (the full shape) or one value per row. Rows longer than ROW_LIMIT are
    walked in blocks, once per level of reduction (codegen/rows.py, the looped form)."""
    kind, shape, dims = space_of(members)
    keepdim, dropped = row_shapes(shape, dims)
    totals = [r for r in members if is_total(r, shape, dims)]
    for r in members:
        if r.op in ROW_REDUCTIONS and r not in totals and (r.inputs[0].shape, tuple(r.attrs["dims"])) != (shape, dims):
            return (f"{r.op} over dims {r.attrs['dims']} of {r.inputs[0].shape} and another reduction over dims "
                    f"{dims} of {shape} do not share rows")
    cols = 1
    for d in dims:
        cols *= shape[d]
    if totals and cols > ROW_LIMIT:
        return (f"the {totals[0].op} over every row needs whole rows in registers, and rows of {cols} elements are "
                f"too long for that (at most {ROW_LIMIT})")
    if totals and cols * (_numel(shape) // max(cols, 1)) > WHOLE_LIMIT:
        return (f"the {totals[0].op} over every row needs all {_numel(shape)} elements in one program "
                f"(at most {WHOLE_LIMIT})")
    allowed = (shape, keepdim, dropped) + (((),) if totals else ())
    for n in members:
        if n.op == "reshape" and not {n.shape, n.inputs[0].shape} <= {keepdim, dropped}:
            return (f"the reshape {n.inputs[0].shape} -> {n.shape} is not between the two forms of one value per row, "
                    f"{keepdim} and {dropped}")
        if n.shape == shape and dropped not in (shape, keepdim):
            for i in n.inputs:
                if i in merged and i.shape == dropped:
                    return (f"{i.op} gives one value per row as {i.type_str} (no keepdim) and {n.op} broadcasts it "
                            "along other dimensions, not along the rows")
        if n.shape not in allowed:
            return (f"{n.op} ({n.type_str}) is neither a whole row of {shape} over dims {dims} nor one value per "
                    "row")
        if n.op == "rand" or (n.op == "iota" and n.shape != shape):
            return f"{n.op} numbers its elements over its own shape, not the kernel's rows"
    return None
