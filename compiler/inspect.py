"""Pictures of values: every node's number in its box.

Two views, both drawn with `render.values_dot`:

* `scalar_view(fn, *args, path=...)`: micrograd's picture. Andrej Karpathy's micrograd
  draws `a*b + c → tanh` as boxes holding `data` and `grad`, and that picture is how many
  people first *see* backpropagation: each grad is d(output)/d(this value), and each one
  is the grad of the box above it times a local derivative. For tiny graphs (scalars, or
  arrays of a handful of numbers) this draws the traced forward graph the same way: the
  data come from the reference executor and the grads from the joint graph that autodiff
  builds (`grad_graph(..., keep_cotangents=True)` hands back the cotangent of every
  forward node), all in float64.
* `gradient_check_view(fn, *args, path=...)`: a gradient check that points at the node
  that broke. The usual check compares a program's final gradients with a reference and
  says "wrong", without saying where. Here the whole joint graph (forward and backward)
  runs twice: through the generated Triton kernels, unfused, in float32, copying every
  kernel's output as it is written; and on the NumPy reference in float64 on the same
  inputs. Each node is coloured by the relative error of its value: green below 1e-5,
  yellow below 1e-3, red above. A bug in one kernel turns its node red and everything
  downstream of it too: the first red node in graph order is the culprit (`first_bad`).
  Forward nodes are values, backward nodes are gradients.

  An error that comes in through a node's inputs is not that node's fault, and float32
  can be honestly inaccurate (tanh's derivative 1 - t*t near saturation cancels: red, with
  no bug). So each node also gets a *local* error: its op re-run in float64 on the very
  float32 inputs its kernel read. That measures only what the kernel itself got wrong;
  nodes whose local error is above the threshold are the `culprits`, drawn with a double
  dark-red rim.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ops.errors import ChainruleError, GradientError
from ops.evaluate import run_graph, run_graph_values
from ops.ir import source_text
from ops.primitive import REGISTRY
from ops.printer import node_code, value_names
from ops.trace import trace

from . import backends
from .autodiff import grad_graph
from .lower import Literal
from .pipeline import compile_kernels
from .render import render_dot, values_dot
from .simplify import simplify

GREEN, YELLOW, RED = "#bbf7d0", "#fef08a", "#fca5a5"
GOOD, FAIR = 1e-5, 1e-3           # below GOOD: green; below FAIR: yellow; else red
THRESHOLD = FAIR                  # first_bad: the first node whose error is above this
FLOOR = 1e-6                      # a value whose norm is below this is compared absolutely
BACKWARD_RIM = "#ea580c"          # the rim of a gradient's box (its fill shows the error)
CULPRIT_RIM = "#b91c1c"           # the double rim of a node whose own kernel is wrong
INPUT_FILL = "#f1f5f9"            # inputs are given, not checked: grey, whatever their kind
SHOWN = 4                         # arrays of at most this many elements are printed in full


# -- numbers as text ------------------------------------------------------------------------------

def fmt_number(x):
    """A number for a box: 4 significant digits (0.8814, -1.2, 6, 1.5e-07)."""
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}"


def describe(value):
    """A value in a few characters: a scalar as a number, up to SHOWN elements in full
    ([0.1, -2.3]), a larger float array as `mean m ±std`, a larger bool array as a count,
    a larger integer array as its range."""
    a = np.asarray(value)
    if a.ndim == 0:
        return fmt_number(a.item())
    if a.size <= SHOWN:
        return _nested(a.tolist())
    if a.dtype == bool:                 # (the box's type line already gives the shape)
        return f"{int(a.sum())}/{a.size} true"
    if a.dtype.kind in "iu":
        return f"in [{a.min()}, {a.max()}]"
    with np.errstate(all="ignore"):
        return f"mean {fmt_number(a.mean())} ±{fmt_number(a.std())}"


def _nested(items):
    if isinstance(items, list):
        return "[" + ", ".join(_nested(i) for i in items) + "]"
    return fmt_number(items)


def _arrays(args):
    """The arguments as NumPy arrays; Python numbers are float64 scalars."""
    out = []
    for a in args:
        if isinstance(a, numbers.Number) and not isinstance(a, (bool, np.bool_)):
            a = np.float64(a)
        if hasattr(a, "detach") and hasattr(a, "numpy"):      # a torch tensor
            a = a.detach().cpu().numpy()
        out.append(np.asarray(a))
    return out


def _float_argnums(arrays, argnums):
    if argnums is None:
        return tuple(i for i, a in enumerate(arrays) if a.dtype.kind == "f")
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


# -- the scalar (micrograd) view --------------------------------------------------------------------

def scalar_values(fn, *args, argnums=None):
    """(forward graph, {node: data}, {node: grad}) of fn on `args` in float64, where grad is
    d(output)/d(node) for every node that has one (the output must be a scalar; argnums:
    the inputs gradients flow to, by default every float input)."""
    arrays = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in _arrays(args)]
    graph = trace(fn, *arrays)
    argnums = _float_argnums(arrays, argnums)
    data = run_graph_values(graph, arrays)
    if len(graph.outputs) != 1 or graph.outputs[0].shape != ():
        raise GradientError(f"scalar_view draws d(output)/d(node): {graph.name} must return one scalar, it returns "
                            f"{', '.join(o.type_str for o in graph.outputs)}", op="grad",
                            source=graph.outputs[0].source if graph.outputs else None)
    joint = grad_graph(graph, argnums, with_value=True, keep_cotangents=True)
    outputs = run_graph(joint, arrays)
    grads = {graph.nodes[k]: outputs[position] for k, position in joint.cotangent_of}
    return graph, data, grads


def scalar_view(fn, *args, path, argnums=None, title=None):
    """Draw fn's forward graph with `data` and `grad` in every box, micrograd-style (see the
    module docstring); returns the path written (render.render_dot: .svg, .png, .pdf, .dot)."""
    graph, data, grads = scalar_values(fn, *args, argnums=argnums)
    notes = {}
    for node in graph.nodes:
        if node.is_scalar_const or node not in data:
            continue
        lines = [f"data {describe(data[node])}"]
        if node in grads:
            lines.append(f"grad {describe(grads[node])}")
        notes[node] = {"text": "\n".join(lines)}
    title = title or f"{graph.name}: data, and grad = d(output)/d(data), in float64"
    return render_dot(values_dot(graph, notes, title=title), str(path))


# -- the gradient check ------------------------------------------------------------------------------

@dataclass
class GradientCheck:
    """Per node of the checked joint graph (by its printed name, as in 02_simplified.py):
    the relative error of the float32 kernels against the float64 reference."""

    graph: object                                   # the float32 joint graph that was checked
    input_names: list = field(default_factory=list)  # the user's name of each of its inputs
    errors: dict = field(default_factory=dict)      # name -> relative error
    local_errors: dict = field(default_factory=dict)  # name -> error of its kernel on its own inputs
    kinds: dict = field(default_factory=dict)       # name -> "value" (forward) | "gradient" (backward)
    first_bad: str | None = None                    # the first node in graph order above threshold
    worst: tuple | None = None                      # (name, error) of the largest error
    culprits: list = field(default_factory=list)    # names whose local error is above threshold
    threshold: float = THRESHOLD
    backend: str = "interpret"

    @property
    def ok(self):
        return self.first_bad is None


def relative_error(got, want, floor=FLOOR):
    """‖got − want‖ / max(‖want‖, floor); bool and integer values: the fraction of elements
    that differ. A NaN or infinity where the other side has something else is an infinite
    error (a kernel that left its poison behind)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return math.inf
    if want.size == 0:
        return 0.0
    if want.dtype.kind in "biu" or got.dtype.kind in "biu":
        return float(np.mean(got != want))
    a, b = got.astype(np.float64), want.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if np.any(~same & ~(np.isfinite(a) & np.isfinite(b))):
        return math.inf
    with np.errstate(all="ignore"):
        diff = np.where(same, 0.0, a - b)
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(np.where(np.isfinite(b), b, 0.0))), floor))


def fmt_error(error):
    return "0" if error == 0 else f"{error:.1e}"


def colour(error):
    return GREEN if error < GOOD else YELLOW if error < FAIR else RED


def _joint(fn, arrays, argnums):
    """(the simplified joint graph, the names of fn's arguments)."""
    forward = trace(fn, *arrays)
    return simplify(grad_graph(forward, argnums)), [n.name for n in forward.inputs]


def _same_structure(a, b):
    if len(a.nodes) != len(b.nodes):
        raise ChainruleError(f"gradient check: the float32 graph of {a.name} has {len(a.nodes)} nodes but the "
                             f"float64 one has {len(b.nodes)}, so their nodes cannot be matched (the passes "
                             "simplified them differently)")
    for k, (x, y) in enumerate(zip(a.nodes, b.nodes)):
        if x.op != y.op or x.shape != y.shape:
            raise ChainruleError(f"gradient check: node {k} of {a.name} is {x.op} -> {x.type_str} in float32 but "
                                 f"{y.op} -> {y.type_str} in float64, so the two graphs cannot be compared node by "
                                 "node", op=x.op, source=x.source)


def triton_values(graph, args, backend="interpret"):
    """{node: NumPy array} of every value of `graph` computed by its generated Triton kernels,
    unfused and poisoned: each kernel's outputs are copied right after its launch (later
    kernels reuse the arena), and a view is read through its strides from its base's copy."""
    import torch  # optional heavy dependency: the kernels' values come back as torch tensors

    executor_class = backends.executor_class(backend)
    executor = executor_class(compile_kernels(graph, executor_class.target_for(backend), fuse=False), poison=True)
    bases = {}

    def observe(kernel, outputs):
        for node, tensor in outputs.items():
            bases[node] = tensor.to("cpu", copy=True)

    executor(list(args), observe=observe)
    for node, array in zip(graph.inputs, args):
        bases[node] = torch.from_numpy(np.array(array, dtype=node.dtype))
    for node, array in executor.schedule.constants.items():
        bases[node] = torch.from_numpy(np.array(array))
    values = {}
    for node in graph.nodes:
        if node.is_scalar_const:
            values[node] = np.asarray(node.attrs["value"], dtype=node.dtype)
            continue
        try:
            where = executor.schedule.location(node)
        except KeyError:               # inside a fused kernel, never stored (not with fuse=False)
            continue
        if isinstance(where, Literal):
            values[node] = np.full(node.shape, where.value, dtype=node.dtype)
        elif where.base in bases:
            view = torch.as_strided(bases[where.base], where.shape, where.strides, where.offset)
            values[node] = view.numpy().copy()
    return values


def node_errors(fn, *args, argnums=None, backend="interpret", threshold=THRESHOLD):
    """Run fn's simplified joint graph (value and gradients) through the Triton kernels in
    float32 and the reference in float64 on the same inputs (integer inputs as given);
    return a GradientCheck with every computed node's relative error."""
    if backend not in ("interpret", "triton"):
        raise ValueError(f"gradient check: backend must be 'interpret' or 'triton', not {backend!r}")
    arrays = _arrays(args)
    args32 = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in arrays]
    args64 = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in args32]
    argnums = _float_argnums(args32, argnums)
    (graph, input_names), (graph64, _) = _joint(fn, args32, argnums), _joint(fn, args64, argnums)
    _same_structure(graph, graph64)
    got = triton_values(graph, args32, backend)
    want = run_graph_values(graph64, args64)
    names = value_names(graph)
    report = GradientCheck(graph, input_names, threshold=threshold, backend=backend)
    for node, twin in zip(graph.nodes, graph64.nodes):
        if node.op in ("input", "const") or node not in got:
            continue                  # given, or folded by the passes: nothing was computed
        name = names[node]
        error = relative_error(got[node], want[twin])
        report.errors[name] = error
        local = _local_error(node, twin, got)
        if local is not None:
            report.local_errors[name] = local
            if not local <= threshold:
                report.culprits.append(name)
        report.kinds[name] = "gradient" if node.role == "backward" else "value"
        if report.first_bad is None and not error <= threshold:
            report.first_bad = name
        if report.worst is None or not error <= report.worst[1]:
            report.worst = (name, error)
    return report


def _local_error(node, twin, got):
    """The error of node's kernel against its op run in float64 (twin: the node of the
    float64 graph) on the float32 values its inputs had; None if those are unknown."""
    if any(i not in got for i in node.inputs):
        return None
    inputs = [np.asarray(got[i]).astype(t.dtype) for i, t in zip(node.inputs, twin.inputs)]
    try:
        with np.errstate(all="ignore"):
            want = np.asarray(REGISTRY[twin.op].impl(*inputs, **twin.attrs)).astype(twin.dtype)
    except Exception:               # an op the reference cannot run on these: no local error
        return None
    return relative_error(got[node], want)


def gradient_check_view(fn, *args, path, argnums=None, backend="interpret", threshold=THRESHOLD):
    """Draw fn's joint graph coloured by each node's error (see the module docstring);
    returns (the path written, the GradientCheck)."""
    report = node_errors(fn, *args, argnums=argnums, backend=backend, threshold=threshold)
    graph = report.graph
    names = value_names(graph)
    notes = {}
    for node, user in zip(graph.inputs, report.input_names):
        role = "a parameter: its gradient is checked" if node in graph.params() else "data"
        notes[node] = {"text": f"({user})" if user and user != names[node] else "", "fillcolor": INPUT_FILL,
                       "tooltip": f"{names[node]} = {user}: {node.type_str}, {role}; given, not computed"}
    for node in graph.nodes:
        name = names[node]
        if name not in report.errors or node.is_scalar_const:
            continue
        error, kind = report.errors[name], report.kinds[name]
        where = f"\n{node.source}: {source_text(node.source)}" if node.source else ""
        local = report.local_errors.get(name)
        own = "" if local is None else f"\nlocal error {local:.2e} (its kernel vs float64 on the same inputs)"
        culprit = name in report.culprits
        notes[node] = {"text": f"{name}: err {fmt_error(error)}", "fillcolor": colour(error),
                       "tooltip": f"{kind}: {node_code(node, names)}\nrelative error {error:.2e} (float32 {backend} "
                                  f"kernels vs float64 reference){own}"
                                  + ("\nTHIS KERNEL IS WRONG: it miscomputes even from its own inputs" if culprit
                                     else "") + where}
        if kind == "gradient":
            notes[node]["color"] = BACKWARD_RIM
            notes[node]["penwidth"] = "1.6"
        if culprit:
            notes[node].update({"color": CULPRIT_RIM, "peripheries": "2", "penwidth": "2"})
    if report.worst is None:
        verdict = "nothing computed"
    else:
        worst, error = report.worst
        verdict = f"worst {worst} ({report.kinds[worst]}) err {fmt_error(error)}"
        if report.first_bad is not None:
            verdict += f"; first above {threshold:.0e}: {report.first_bad} ({report.kinds[report.first_bad]})"
        if report.culprits:
            verdict += f"\nwrong kernels (double rim): {', '.join(report.culprits)}"
    title = (f"{graph.name}: float32 {backend} kernels vs float64 reference, {verdict}\n"
             f"green < {GOOD:.0e} ≤ yellow < {FAIR:.0e} ≤ red; orange rim: a gradient")
    return render_dot(values_dot(graph, notes, title=title), str(path)), report
