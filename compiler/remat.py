"""Rematerialization: recompute cheap values in the backward instead of saving them.

The backward reads values the forward computed (see `compiler.saved`), and each one stays
in memory from the forward until the backward's last read. Some are cheaper to compute
again than to keep: relu's mask `le(x, 0.0)` and its output `where(mask, 0.0, x)` can both
be recomputed from x, so only x is kept; cross_entropy's one-hot matrix can be rebuilt from
the integer labels. This pass trades such memory for a little arithmetic.

What may be recomputed (`recomputable`), and why:

- pointwise primitives (arithmetic, comparisons, where, cast, ...): one read and one
  write per element, deterministic, exactly the same bits when run again on the same
  inputs; in a fused backward kernel recomputing them usually costs no extra launch;
- `iota` (0, 1, 2, ... along a dimension) and a scalar constant broadcast to a shape
  (`expand(0.5, shape=...)`): they read nothing, so recomputing them frees their memory
  for nothing.

Never recomputed: matmul and conv (the expensive ops whose results remat is meant to
keep), reductions (a full pass over their input, and their input would have to be kept
instead, usually larger), pooling windows, and layout views (reshape, permute, expand,
slice): a view owns no memory, so recomputing one frees nothing while its source is kept.
`rand` may be recomputed: its numbers are a pure function of (seed, element index)
(Philox), so drawing them again gives the same bits. `regenerate_random`, which every
compile runs, uses that for dropout: its keep-mask is drawn again in the backward from the
seed, never saved.

How: for a saved forward node s that is recomputable, a *recompute set* R is s plus some
of its recomputable forward ancestors at most `max_depth` steps above it, forming one piece
with s (every such set is tried, up to a few hundred per node). The nodes
of R are copied as new nodes with role "backward", each placed right before its first
backward reader, and every backward reader of a node of R reads the copy instead. The
forward values R reads from outside it (its leaves) become saved, if they were not already.
A candidate is taken only if it lowers the bytes the backward keeps alive: forward values
plus inputs it reads (an input the backward did not read before now counts: a runtime
could otherwise release it after the forward). The best candidate is applied, and the
search repeats until none helps. Memory is counted as in `compiler.saved`: a view costs
its source's memory.

Run it after `simplify`, never before: CSE would see a recomputed copy and its original
as the same value and merge them again.
"""
from __future__ import annotations

from ops import ir
from ops.families import RANDOM_OPS
from ops.primitive import REGISTRY, constant
from ops.printer import value_names

from .graphs import like, new_input
from .saved import nbytes, recomputable, saved_nodes, storage
from .simplify import dce

def _cost(saved, base_of):
    """Bytes the backward keeps alive when it reads `saved`: each memory once."""
    return sum(nbytes(b) for b in {base_of.get(n, n) for n in saved})


def _candidates(root, max_depth, limit=512):
    """Recompute sets for root: root plus recomputable forward ancestors at most max_depth
    steps above it, each reached from root through the set (so the set is one piece).
    Every such set up to `limit` of them, smallest first."""
    depth, frontier = {root: 0}, [root]
    for d in range(1, max_depth + 1):
        nxt = []
        for n in frontier:
            for i in n.inputs:
                if i not in depth and i.role == "forward" and recomputable(i):
                    depth[i] = d
                    nxt.append(i)
        frontier = nxt
    sets, seen, k = [frozenset([root])], {frozenset([root])}, 0
    while k < len(sets) and len(sets) < limit:
        members = sets[k]
        k += 1
        for n in sorted(members, key=lambda n: n.id):
            for i in n.inputs:
                if i in depth and i not in members:
                    grown = members | {i}
                    if grown not in seen and len(sets) < limit:
                        seen.add(grown)
                        sets.append(grown)
    return sets


def _after(saved, members):
    """The saved set once `members` are recomputed in the backward."""
    leaves = {i for n in members for i in n.inputs
              if i not in members and (i.op == "input" or (i.role == "forward" and i.op != "const"))}
    return (saved - members) | leaves


def plan(graph, max_depth=3):
    """The best recompute set for graph, and (bytes before, bytes after); None if nothing helps."""
    saved = {n for n, _ in saved_nodes(graph)}
    base_of = storage(graph)
    now = _cost(saved, base_of)
    best = None
    for root in graph.nodes:
        if root not in saved or root.role != "forward" or not recomputable(root):
            continue
        for members in _candidates(root, max_depth):
            cost = _cost(_after(saved, members), base_of)
            if cost < now and (best is None or cost < best[1]):
                best = (members, cost)
    return None if best is None else (best[0], now, best[1])


def recompute(graph, members):
    """graph with the nodes in `members` recomputed in the backward: copies with role
    "backward", each emitted right before its first backward reader, which reads it."""
    members = set(members)
    trace = ir.Trace()
    with ir.tracing(trace):
        inputs = [new_input(trace, n, i, n.name, kind=n.attrs.get("kind", "data"))
                  for i, n in enumerate(graph.inputs)]
        env = {n: t for n, t in zip(graph.inputs, inputs)}
        copies = {}

        def copy_of(node):
            if node not in copies:
                args = [copy_of(i) if i in members else env[i] for i in node.inputs]
                with ir.node_context(source=node.source, scope=node.scope, role="backward"):
                    copies[node] = REGISTRY[node.op].bind(args, node.attrs)
            return copies[node]

        for node in graph.nodes:
            if node in env:
                continue
            if node.role != "forward":
                args = [copy_of(i) if i in members else env[i] for i in node.inputs]
            else:
                args = [env[i] for i in node.inputs]
            with ir.node_context(source=node.source, scope=node.scope, role=node.role):
                if node.op == "const":
                    env[node] = constant(node.attrs["value"], node.attrs["dtype"])
                else:
                    env[node] = REGISTRY[node.op].bind(args, node.attrs, name=node.name)
    new = like(graph, [t.node for t in inputs], trace.nodes, [env[o].node for o in graph.outputs])
    return dce(new)


def regenerate_random(graph):
    """Values made from random numbers alone (dropout's keep-mask `ge(rand(seed), p)`) that the
    backward reads are drawn again in the backward from their seed instead of being saved:
    the backward reads an 8-byte seed, not a mask the size of the activation. Values that mix
    random numbers with other forward values (dropout's output) are left alone."""
    members = set()
    for node, _ in saved_nodes(graph):
        if node.role == "forward" and recomputable(node):
            members |= _drawn_from_a_seed(node)
    return recompute(graph, members) if members else graph


def _drawn_from_a_seed(node):
    """node and the recomputable forward nodes above it, if they include a `rand` and read
    nothing else but inputs and constants; else the empty set."""
    found, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n in found:
            continue
        found.add(n)
        for i in n.inputs:
            if i.op in ("input", "const"):
                continue
            if i.role != "forward" or not recomputable(i):
                return set()
            stack.append(i)
    return found if any(n.op in RANDOM_OPS for n in found) else set()


def rematerialize(graph, max_depth=3, log=None):
    """Recompute cheap pointwise values in the backward wherever that lowers the bytes the
    forward saves for it (forward values plus inputs the backward reads). Same values,
    same outputs; a graph without a backward comes back unchanged. `log`, a list, receives
    (recomputed node names, bytes before, bytes after) for each step."""
    for _ in range(len(graph.nodes)):
        step = plan(graph, max_depth)
        if step is None:
            break
        members, before, after = step
        if log is not None:
            names = value_names(graph)
            log.append((sorted((names[n] for n in members), key=lambda s: (len(s), s)), before, after))
        graph = recompute(graph, members)
    return graph


__all__ = ["plan", "recomputable", "recompute", "regenerate_random", "rematerialize"]
