"""The artifacts of one compile, written from a `Compiled` alone: one small, numbered folder
a learner reads top to bottom (docs/artifacts.md), and the pictures of the step.

    00_trace.py  01_joint.py  02_simplified.py  03_fusion.txt  04_memory.txt  05_saved.txt
    kernels/NN_name.py  run.py  forward.svg backward.svg (or step.svg) kernels.svg memory.svg

What an executor adds (06_autotune.txt, the tuned block sizes in run.py) comes in as
arguments. Every file is written whole or not at all, so a crash never leaves half of one.
"""
from __future__ import annotations

import os

from .files import write_atomic
from .fusion import fuse
from .memory_plot import plot_memory
from .render import backward_dot, forward_dot, kernels_dot, render_dot
from .repro import run_script
from .saved import saved_report


def texts(compiled, kernels=None, extra=(), launch_configs=()):
    """(file name, text) of every artifact. compiled: what ran; kernels: the same compile with
    its kernel passes (compiled itself, or `pipeline.with_kernels(compiled)` for a backend that
    runs no kernels: then the fusion and memory files describe the kernels it would run, and
    no kernels/ or run.py is written)."""
    kernels = kernels or compiled
    files = [("00_trace.py", compiled.forward), ("01_joint.py", compiled.joint), ("02_simplified.py", compiled.graph)]
    files = [(name, str(graph)) for name, graph in files if graph is not None]
    files.append(("03_fusion.txt", (kernels.fusion or fuse(compiled.graph)).text(kernels.schedule)))
    files.append(("04_memory.txt", kernels.memory.text()))
    files.append(("05_saved.txt", saved_report(compiled.graph, before=compiled.before_remat)))
    files += list(extra)
    if compiled.schedule is not None:
        files += [(os.path.join("kernels", name), text) for name, text in compiled.files()]
        files.append(("run.py", run_script(compiled, launch_configs)))
    return files


def dump(compiled, directory, kernels=None, extra=(), launch_configs=(), params=()):
    """Write the artifacts and the pictures into `directory`; returns the paths written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, text in texts(compiled, kernels, extra, launch_configs):
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, text)
        written.append(path)
    return written + render(compiled, directory, kernels=kernels, params=params)


def render(compiled, directory, kernels=None, fmt="svg", collapse="auto", quiet=False, params=()):
    """Draw the step: forward.svg (the traced program), backward.svg (the joint graph:
    gradients flowing back, saved values dashed), kernels.svg (every fused kernel as a
    cluster) and memory.svg (buffer lifetimes in the arena); a training step (forward,
    backward and update traced as one program) draws step.svg in place of the first two.
    params: the inputs drawn as parameters. Returns the paths written."""
    kernels = kernels or compiled
    forward, joint, graph = compiled.forward, compiled.joint, compiled.graph
    if joint is None and any(n.role == "backward" for n in forward.nodes):
        pictures = [("step", backward_dot(forward, collapse=collapse, whole_step=True, params=params,
                                          title=f"{forward.name}: forward (blue), backward (orange) and "
                                                "the update (purple) in one program"))]
    else:
        pictures = [("forward", forward_dot(forward, params=params, collapse=collapse,
                                            title=f"{forward.name}: the forward program",
                                            output_name="loss" if joint is not None else None))]
    if joint is not None:
        users_names = {j: f.name for j, f in zip(graph.inputs, forward.inputs) if f.name}
        pictures.append(("backward", backward_dot(graph, collapse=collapse, input_names=users_names,
                                                  title=f"{graph.name}: the chain rule, from the loss back to every "
                                                        "parameter (dashed: values saved by the forward)")))
    schedule = kernels.schedule
    pictures.append(("kernels", kernels_dot(graph, schedule, collapse=collapse,
                                            title=f"{graph.name}: {len(schedule.kernels)} kernels")))
    written = [render_dot(text, os.path.join(directory, f"{name}.{fmt}"), quiet=quiet) for name, text in pictures]
    written.append(plot_memory(kernels.memory, os.path.join(directory, f"memory.{'svg' if fmt == 'dot' else fmt}"),
                               kernel_labels=[k.name for k in schedule.kernels]))
    return written
