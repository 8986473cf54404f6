"""run.py: a runnable reproduction of one compiled step, written by `Program.dump(dir)`.

The script launches the kernels in `dir/kernels/` in order, exactly as the Triton executor
does (runtime/executors/triton.py): each kernel's `launch(...)` gets the buffers of its
inputs (for an input that is a view, the buffer it is a view of: the kernel reads through
strides written into its code), then freshly allocated outputs. It feeds them random
inputs of the traced shapes and dtypes (never zeros), reads the graph's outputs back
through their views, and compares them with the reference executor (NumPy, node by node)
on the graph re-traced from `dir/02_simplified.py`. Without a GPU the kernels run under
Triton's interpreter on the CPU.

The schedule (which file, which buffers) is written into the script as data, so the script
reads top to bottom without chainrule's lowering; chainrule itself is needed only to
re-trace 02_simplified.py (for the reference, and for constant arrays).
"""
from __future__ import annotations

import textwrap

from compiler.codegen.common import literal_code
from compiler.lower import Literal, View
from ops.printer import value_names

TEMPLATE = '''"""Reproduce the compiled step {name}: its {count} kernels in kernels/, in order,
on random inputs, checked against the reference executor on 02_simplified.py.

    python run.py [--seed N] [--tol T]

It needs chainrule importable: when this folder lies inside the chainrule repository, run.py
finds the repository itself; elsewhere run `pip install -e .` in the repository first.
The kernels run on the GPU when there is one; otherwise (or with TRITON_INTERPRET=1) they
run under Triton's interpreter on the CPU, loaded as chainrule loads them there
(runtime/executors/kernel_cache.py: its overflow checks off, each kernel launched with the
first of its INTERPRETER_CONFIGS); TRITON_INTERPRET=0 forces the GPU. The same kernel text
serves both.

Written by chainrule (Program.dump); it launches each kernel as runtime/executors/triton.py
does: launch(*inputs, *outputs), an input that is a view passed as the buffer it views.
"""
import argparse
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def find_repository():
    """Put the chainrule repository on sys.path when this folder lies inside it."""
    folder = HERE
    while True:
        if all(os.path.isfile(os.path.join(folder, pkg, "__init__.py")) for pkg in ("ops", "compiler", "runtime")):
            sys.path.insert(0, folder)
            return
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent


find_repository()

import numpy as np  # noqa: E402
import torch  # noqa: E402  (before triton, which reads TRITON_INTERPRET when it is imported)

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"         # Triton's interpreter on the CPU
INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")
if not INTERPRET and not torch.cuda.is_available():
    sys.exit("TRITON_INTERPRET is off but there is no GPU: unset it to run under the interpreter")
DEVICE = "cpu" if INTERPRET else "cuda"

import triton  # noqa: E402,F401

import compiler as C  # noqa: E402
from ops.printer import value_names  # noqa: E402
from ops.evaluate import run_graph  # noqa: E402
from runtime.executors.kernel_cache import for_interpreter, launch_configs  # noqa: E402

NAME = {name!r}

# the traced inputs, in order: (name, shape, dtype)
INPUTS = [
{inputs}
]

# the kernels, in launch order: (file in kernels/, the buffers launch() reads, in order,
# the outputs it writes: (name, shape, dtype))
KERNELS = [
{kernels}
]

# the block sizes autotuning chose on {tuned_on} (06_autotune.txt), used there only; a kernel not
# listed launches with the first of its configs for where it runs
TUNED_UNDER_INTERPRETER = {tuned_interpret!r}
TUNED = {{
{tuned}
}}

# the graph's outputs: (label, name, type, buffer, shape, strides, offset); a constant output
# has buffer None and its value in place of the shape
OUTPUTS = [
{outputs}
]

TORCH_DTYPE = {{"float32": torch.float32, "float64": torch.float64, "int32": torch.int32, "int64": torch.int64,
               "bool": torch.bool}}


def random_inputs(seed):
    """Floats of magnitude 0.1 to 1 with random signs, integers in [0, 10) (class labels),
    booleans half true: never zeros."""
    rng = np.random.default_rng(seed)
    arrays = []
    for _, shape, dtype in INPUTS:
        if dtype.startswith("float"):
            array = rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
        elif dtype == "bool":
            array = rng.random(shape) < 0.5
        else:
            array = rng.integers(0, 10, shape)
        arrays.append(np.asarray(array).astype(dtype))
    return arrays


def reference_graph():
    """The graph of 02_simplified.py: the program exec'd, then traced on the input specs."""
    path = os.path.join(HERE, "02_simplified.py")
    namespace = {{"__name__": "simplified"}}
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)
    import ops as O

    return C.trace(namespace[NAME], *[O.spec(shape, dtype) for _, shape, dtype in INPUTS])


def load_kernel(file):
    path = os.path.join(HERE, "kernels", file)
    spec = importlib.util.spec_from_file_location("kernel_" + file[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)              # @triton.jit reads the kernel's source from this file
    return module


def launch_config(file, module):
    """The launch parameters of a kernel: autotuning's choice where it was made, else the first
    of its INTERPRETER_CONFIGS under the interpreter, of its CONFIGS on a GPU."""
    if file in TUNED and INTERPRET == TUNED_UNDER_INTERPRETER:
        return TUNED[file]
    return launch_configs(module, INTERPRET)[0]


def poisoned(shape, dtype):
    """A fresh output, filled with values a kernel never writes: an element it forgets shows."""
    out = torch.empty(shape, dtype=TORCH_DTYPE[dtype], device=DEVICE)
    if dtype.startswith("float"):
        return out.fill_(float("nan"))
    return out.fill_(True) if dtype == "bool" else out.fill_(torch.iinfo(out.dtype).min)


def run_kernels(arrays, graph):
    """The step through the kernels: NumPy inputs in, NumPy outputs out."""
    names = value_names(graph)
    env = {{name: torch.from_numpy(np.ascontiguousarray(array)).to(DEVICE)
           for (name, _, _), array in zip(INPUTS, arrays)}}
    for node in graph.nodes:                     # constant arrays (scalars are literals in the kernels)
        if node.op == "const" and not node.is_scalar_const:
            env[names[node]] = torch.from_numpy(np.array(node.attrs["value"], dtype=node.dtype)).to(DEVICE)
    with np.errstate(all="ignore"):              # the interpreter computes with NumPy: log(0) is -inf, quietly
        for file, reads, writes in KERNELS:
            missing = [name for name in reads if name not in env]
            if missing:
                sys.exit(f"{{file}} reads {{', '.join(missing)}}, which no earlier kernel wrote")
            module = load_kernel(file)
            outputs = [poisoned(shape, dtype) for _, shape, dtype in writes]
            if all(o.numel() for o in outputs):
                module.launch(*[env[name] for name in reads], *outputs, **launch_config(file, module))
            env.update((name, out) for (name, _, _), out in zip(writes, outputs))
            print(f"  {{file:<40}} -> {{', '.join(name for name, _, _ in writes)}}")
    results = []
    for _, _, _, buffer, shape, strides, offset in OUTPUTS:
        if buffer is None:
            results.append(np.asarray(shape))
            continue
        base = env[buffer]
        value = torch.as_strided(base, shape, strides, base.storage_offset() + offset)
        results.append(value.cpu().numpy().copy())
    return results


def relative_error(got, want):
    """||got - want|| / ||want||; NaNs must sit in the same places (else inf)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return float("inf")
    got, want = np.nan_to_num(got), np.nan_to_num(want)
    scale = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / (scale if scale > 0 else 1.0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=f"Run the compiled step {{NAME}} against the reference.")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--tol", type=float, default=1e-4, help="the largest relative error that passes")
    args = parser.parse_args(argv)
    where = "the CPU, under Triton's interpreter" if INTERPRET else "the GPU"
    print(f"{{NAME}}: {{len(KERNELS)}} kernels on {{where}}, random inputs (seed {{args.seed}})")
    arrays = random_inputs(args.seed)
    if INTERPRET:
        for_interpreter()
    graph = reference_graph()
    got = run_kernels(arrays, graph)
    want = run_graph(graph, arrays)
    errors = []
    print("output relative error (||kernels - reference|| / ||reference||):")
    for (label, name, type_, *_), g, w in zip(OUTPUTS, got, want):
        errors.append(relative_error(g, w))
        print(f"  {{label:<{label_width}}}  {{name:<{name_width}}}  {{type_:<{type_width}}}  {{errors[-1]:.2e}}")
    worst = max(errors, default=0.0)
    print(f"max relative error: {{worst:.2e}} ({{'ok' if worst <= args.tol else 'FAILED'}}: tolerance {{args.tol:g}})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
'''


def _value(literal):
    return literal_code(literal) if literal.dtype != "bool" else repr(bool(literal.value))


def run_script(compiled, launch_configs=()):
    """The text of run.py for a compiled schedule (see the module docstring); launch_configs:
    each kernel's tuned block sizes (runtime/executors/autotune.py), {} where untuned."""
    graph, schedule, target = compiled.graph, compiled.schedule, compiled.target
    names = value_names(graph)
    files = [name for name, _ in compiled.files()]
    inputs = [f"    ({names[n]!r}, {tuple(n.shape)!r}, {n.dtype!r})," for n in graph.inputs]
    kernels = []
    for file, kernel in zip(files, schedule.kernels):
        reads = [names[v.base] for v in kernel.inputs.values() if isinstance(v, View)]
        writes = [f"({names[n]!r}, {tuple(n.shape)!r}, {n.dtype!r})" for n in kernel.outputs]
        line = f"    ({file!r}, {reads!r}, [{', '.join(writes)}]),"
        if len(line) > 110:          # long: the reads wrapped, one output a line
            reads = textwrap.wrap(repr(reads), 100, initial_indent="     ", subsequent_indent="      ")
            line = "\n".join([f"    ({file!r},", *reads[:-1], reads[-1] + ",", "     [",
                              *(f"         {w}," for w in writes), "     ]),"])
        kernels.append(line)
    labels = graph.output_names or [f"output {i}" for i in range(len(graph.outputs))]
    outputs = []
    for label, node in zip(labels, graph.outputs):
        where = schedule.location(node)
        if isinstance(where, Literal):
            value = f"np.full({tuple(node.shape)!r}, {_value(where)}, dtype={node.dtype!r})"
            outputs.append(f"    ({label!r}, {names[node]!r}, {node.type_str!r}, None, {value}, None, None),")
        else:
            outputs.append(f"    ({label!r}, {names[node]!r}, {node.type_str!r}, {names[where.base]!r}, "
                           f"{tuple(where.shape)!r}, {tuple(where.strides)!r}, {where.offset!r}),")
    return TEMPLATE.format(
        name=graph.name, count=len(schedule.kernels),
        tuned_on="the interpreter" if target.interpret else "the GPU", tuned_interpret=target.interpret,
        inputs="\n".join(inputs), kernels="\n".join(kernels), outputs="\n".join(outputs),
        tuned="\n".join(f"    {file!r}: {config!r}," for file, config in zip(files, launch_configs) if config),
        label_width=max((len(label) for label in labels), default=1),
        name_width=max((len(names[n]) for n in graph.outputs), default=1),
        type_width=max((len(n.type_str) for n in graph.outputs), default=1))


__all__ = ["run_script"]
