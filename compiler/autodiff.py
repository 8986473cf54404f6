"""Reverse-mode autodiff as a graph transformation.

From a forward graph and the inputs to differentiate, build one joint graph: the forward
nodes, then for each forward node in reverse order the nodes of its vjp (from the table
in `ops.primitives`). A value read by several nodes receives several cotangents, which
are added: that sum is the chain rule's "sum over paths". The backward nodes are ordinary
primitives, so the joint graph can be fused, lowered, and differentiated again.

Inputs of the joint graph are named `primals_1, primals_2, ...`; a cotangent fed from
outside (for a vector-Jacobian product) is `tangents_1`.
"""
from __future__ import annotations

from ops import ir
from ops import primitives as P
from ops.dtypes import is_float
from ops.errors import GradientError
from ops.primitive import REGISTRY, constant
from ops.printer import value_names

from .graphs import like, new_input, replay
from .simplify import dce


def active_nodes(graph, wrt, output):
    """Nodes that depend on an input in `wrt` and that `output` depends on: only these need
    a cotangent. Everything else is pruned before a single backward node is made."""
    depends = set(wrt)
    for node in graph.nodes:
        if node not in depends and any(i in depends for i in node.inputs) and is_float(node.dtype) \
                and REGISTRY[node.op].differentiable:
            depends.add(node)
    needed, stack = set(), [output]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        stack.extend(node.inputs)
    return depends & needed


def grad_graph(graph, argnums=(0,), with_value=True, seed="ones", keep_cotangents=False, has_aux=False):
    """The joint graph of `graph` (one output) differentiated with respect to inputs `argnums`.

    Its outputs: [value] (if with_value) + one gradient per argnum.
    has_aux: `graph` has more outputs; the first is differentiated, the others (auxiliary
    values: a model's logits, its new batch-norm statistics) are carried through, after the
    gradients, as JAX's `has_aux` does.
    seed="ones": the output must be a scalar, its cotangent is 1.0.
    seed="input": the cotangent is a new input `tangents_1` shaped like the output (a VJP).
    keep_cotangents: also output the cotangent (d output / d node) of every forward node that
    has one, after the gradients; `joint.cotangent_of` lists (index of the node in
    graph.nodes, position in joint.outputs) for each (the pictures of compiler/inspect.py).
    """
    aux = graph.outputs[1:] if has_aux else []
    if len(graph.outputs) != 1 and not has_aux:
        raise GradientError(f"can only differentiate a function with one output, {graph.name} has "
                            f"{len(graph.outputs)}", op="grad")
    output = graph.outputs[0]
    if seed == "ones" and output.shape != ():
        raise GradientError(f"the output must be a scalar to take a gradient, but {graph.name} returns "
                            f"{output.type_str}; reduce it (O.sum, O.mean) or use a loss", op="grad",
                            source=output.source)
    if not is_float(output.dtype):
        raise GradientError(f"the output of {graph.name} is {output.dtype}: only floating-point values have "
                            "gradients", op="grad", source=output.source)
    for i in argnums:
        x = graph.inputs[i]
        if not is_float(x.dtype):
            raise GradientError(f"argument {i} ({x.name}) is {x.dtype}: integers have no gradient, so it cannot "
                                "be in argnums", op="grad", source=x.source)

    trace = ir.Trace()
    with ir.tracing(trace):
        primals = [new_input(trace, n, i, f"primals_{i + 1}", kind="param" if i in argnums else "data")
                   for i, n in enumerate(graph.inputs)]
        tangent = new_input(trace, output, len(primals), "tangents_1") if seed == "input" else None
        env = replay(graph, primals)
        grads, cotangents = backward(graph, env, [graph.inputs[i] for i in argnums], output, tangent,
                                     return_cotangents=True)
        outputs = ([env[output]] if with_value else []) + grads + [env[a] for a in aux]
    inputs = [p.node for p in primals] + ([tangent.node] if tangent is not None else [])
    names = (["value"] if with_value else []) + [f"grad_{graph.inputs[i].name}" for i in argnums] + \
        [f"aux_{k}" for k in range(len(aux))]
    kept = []
    if keep_cotangents:
        printed = value_names(graph)
        kept = [(k, len(outputs) + j) for j, k in
                enumerate(k for k, node in enumerate(graph.nodes) if node in cotangents)]
        outputs = outputs + [cotangents[graph.nodes[k]] for k, _ in kept]
        names = names + [f"cotangent_{printed[graph.nodes[k]]}" for k, _ in kept]
    joint = like(graph, inputs, trace.nodes, [t.node for t in outputs], name=f"{graph.name}_joint")
    joint.output_names = names
    joint.returns_tuple = True
    joint.user_names = [n.name for n in graph.inputs] + ([None] if len(inputs) > len(graph.inputs) else [])
    joint = dce(joint)
    if keep_cotangents:
        joint.cotangent_of = kept       # dce keeps the outputs in order, so positions stay valid
    return joint


def backward(graph, env, wrt, output, seed=None, return_cotangents=False):
    """Append the backward nodes to the current trace; return the cotangent of each of `wrt`.

    env maps graph's nodes to their Tensors in the current trace. return_cotangents: return
    (gradients, {node of graph: its summed cotangent Tensor}) for every node that has one."""
    active = active_nodes(graph, set(wrt), output)
    cotangents = {}
    with ir.node_context(source=output.source, scope=output.scope, role="backward"):
        cotangents[output] = [seed if seed is not None else constant(1.0, output.dtype)]
    for node in reversed(graph.nodes):
        if node not in active or node not in cotangents or node.op == "input":
            continue
        with ir.node_context(source=node.source, scope=node.scope, role="backward"):
            g = _accumulate(cotangents[node])
            cotangents[node] = [g]
            vjp = REGISTRY[node.op].vjp
            input_cts = vjp(g, env[node], *(env[i] for i in node.inputs), **node.attrs)
            for x, ct in zip(node.inputs, input_cts):
                if ct is None or x not in active:
                    continue
                if ct.shape != x.shape:
                    ct = P._sum_to(ct, x.shape)          # the cotangent of a broadcast is a sum
                if ct.dtype != x.dtype:                  # f32 * f64: x's gradient is f32, as in torch
                    ct = P.cast(ct, dtype=x.dtype)
                cotangents.setdefault(x, []).append(ct)
    grads = []
    for x in wrt:
        with ir.node_context(source=x.source, scope=(), role="backward"):
            if x in cotangents:
                grads.append(_accumulate(cotangents[x]))
            else:                                           # the output does not depend on x
                grads.append(P.expand(constant(0.0, x.dtype), shape=x.shape))
    if not return_cotangents:
        return grads
    summed = {x: g for x, g in zip(wrt, grads) if x in cotangents}       # the inputs' sums were made above
    for node, terms in cotangents.items():
        if node not in summed and len(terms) == 1:     # every other node was summed when it was visited
            summed[node] = terms[0]
    return grads, summed


FANOUT_SUM = "fanout_sum"      # the scope of the adds that sum a value's cotangents (pictures show them as Σ)


def _accumulate(terms):
    """A value used n times gets n cotangents; its gradient is their sum."""
    total = terms[0]
    if len(terms) > 1:
        with ir.node_context(scope=ir.current_scope() + (FANOUT_SUM,)):
            for t in terms[1:]:
                total = P.add(total, t)
    return total
