"""A picture of a memory plan: `plot_memory(program.memory, "memory.png")`.

The plan (compiler/memory.py) is a table of buffers, each live for some kernel steps at some
offset in one arena. Drawn on time x memory axes, each buffer is a box: wide as the kernels
it is live for (from the step that writes it to the last step that reads it), tall as its
bytes, at its offset. What a learner should see:

- reuse: boxes stacked in the *same* memory at *different* times; a buffer that lives only
  a few steps leaves its memory free for the next one. Buffers written in place over an
  input (`reused_from`) are hatched and labelled "name <- input";
- the lower bound (dashed): at the peak step (dotted) that many bytes are live at once, so
  no plan can use less. The gap between it and the arena's top (solid) is what the greedy
  placement lost to alignment and to holes it could not fill;
- no reuse: the caption says how much memory allocating without ever freeing would take.

Graph inputs, parameters and results live outside the arena; the caption counts them.
Sizes are in B, KB or MB (1 KB = 1024 bytes), chosen from the arena's size. The file is
written atomically and byte for byte the same for the same plan.
"""
from __future__ import annotations

import os
import textwrap

from .files import atomic_file

FORMATS = ("svg", "png", "pdf")
# metadata that would make two renderings of one plan differ (dates, versions)
_METADATA = {"svg": {"Date": None, "Creator": None}, "pdf": {"CreationDate": None, "Creator": None,
                                                            "Producer": None},
             "png": {"Software": None}}


def _unit(nbytes):
    """(name, bytes per unit) that shows nbytes readably."""
    for name, size in (("MB", 1024 ** 2), ("KB", 1024)):
        if nbytes >= size:
            return name, size
    return "B", 1


def _size(nbytes):
    name, size = _unit(nbytes)
    return f"{nbytes} B" if size == 1 else f"{nbytes / size:.4g} {name}"


def plot_memory(plan, path, kernel_labels=None, title=None):
    """Draw `plan` (a MemoryPlan) to `path` (.svg, .png or .pdf); return the path written.

    `kernel_labels`, one string per step (e.g. the kernels' names), label the x axis;
    without them the steps are numbered."""
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw a memory plan to {path!r}: the suffix must be one of "
                         f"{', '.join('.' + f for f in FORMATS)}")
    if kernel_labels is not None and len(kernel_labels) != plan.steps:
        raise ValueError(f"{len(kernel_labels)} kernel labels for a plan of {plan.steps} steps")

    import matplotlib  # here, not at the top: `import compiler` stays fast

    # a bare Figure draws with the non-interactive Agg canvas, without pyplot: no window opens,
    # and the caller's pyplot backend and open figures (a notebook's) are left alone
    with matplotlib.rc_context({"svg.hashsalt": "chainrule", "font.size": 9}):
        fig = _figure(plan, kernel_labels, title)
        with atomic_file(path) as tmp:          # all or nothing: never half a picture at `path`
            fig.savefig(tmp, format=fmt, metadata=_METADATA[fmt], dpi=120)
    return path


def _figure(plan, kernel_labels, title):
    from matplotlib import colormaps  # optional heavy dependency: only a picture of the plan needs it
    from matplotlib.figure import Figure  # (matplotlib, as above)
    from matplotlib.patches import Rectangle  # (matplotlib, as above)
    from matplotlib.ticker import MaxNLocator  # (matplotlib, as above)

    steps = max(plan.steps, 1)
    unit, scale = _unit(plan.arena_bytes)
    width, height = min(30.0, max(8.0, 0.35 * steps)), 5.5 + (1.0 if kernel_labels else 0.0)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()

    # a box per buffer: x = the kernels it is live for, y = its bytes in the arena
    colors = colormaps["tab20"].colors
    # how many points a step and a unit of y take (the label check), from the axes' size
    top = max(plan.arena_bytes, 1) / scale * 1.06
    box_w, box_h = fig.get_size_inches() * 72 * (0.85, 0.65)
    pt_x, pt_y = box_w / steps, box_h / top
    for i, row in enumerate(plan.rows):
        if not row.bytes:
            continue
        x, y = row.first - 0.45, row.offset / scale
        w, h = row.last - row.first + 0.9, row.bytes / scale
        ax.add_patch(Rectangle((x, y), w, h, facecolor=colors[i % len(colors)], edgecolor="#333333",
                               linewidth=0.6, hatch="///" if row.reused_from else None))
        label = f"{row.name} \u2190 {row.reused_from}" if row.reused_from else row.name
        text_w, text_h = 4.2 * len(label) + 4, 10            # points, at font size 7
        # on a hatched box the name gets a pale background to stay legible
        pale = {"facecolor": "white", "alpha": 0.8, "pad": 1, "edgecolor": "none"}
        style = {"ha": "center", "va": "center", "fontsize": 7, "bbox": pale if row.reused_from else None}
        if w * pt_x >= text_w and h * pt_y >= text_h:
            ax.text(x + w / 2, y + h / 2, label, **style)
        elif h * pt_y >= text_w and w * pt_x >= text_h:
            ax.text(x + w / 2, y + h / 2, label, rotation=90, **style)

    # the three numbers that judge a plan
    lower, arena = plan.live_lower_bound_bytes, plan.arena_bytes
    if plan.rows:
        ax.axhline(arena / scale, color="black", linewidth=1.2, label=f"arena: {_size(arena)}")
        ax.axhline(lower / scale, color="#c0392b", linewidth=1.2, linestyle="--",
                   label=f"lower bound (most bytes live at once): {_size(lower)}")
        if plan.peak_step is not None:
            ax.axvline(plan.peak_step, color="#c0392b", linewidth=1, linestyle=":",
                       label=f"peak: step {plan.peak_step}")

    ax.set_xlim(-0.6, steps - 0.4)
    ax.set_ylim(0, top)
    ax.set_ylabel(f"arena offset ({unit})")
    ax.set_xticks(range(steps))
    ax.set_xlabel("kernel step")
    if kernel_labels:
        ax.set_xticklabels(kernel_labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
    elif steps > 40:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)

    if not plan.rows:
        default = "memory plan: no buffers in the arena"
        title = f"{title}: no buffers in the arena" if title else default
    elif title is None:
        title = (f"memory plan: arena {_size(arena)}, lower bound {_size(lower)}, "
                 f"no reuse {_size(plan.no_reuse_bytes)}")
    ax.set_title(title, fontsize=11)
    if plan.rows:
        fig.legend(loc="outside upper center", ncols=3, fontsize=8, frameon=False)

    inputs = sum(b for _, _, b in plan.persistent)
    results = sum(b for _, _, b in plan.results)
    reused = sum(1 for r in plan.rows if r.reused_from)
    in_place = f"{reused} written in place, hatched" if reused else "none written in place"
    caption = (f"{len(plan.rows)} buffers in the arena ({in_place}); no reuse would "
               f"need {_size(plan.no_reuse_bytes)}. Outside the arena: {len(plan.persistent)} graph inputs, "
               f"parameters and constants ({_size(inputs)}) and {len(plan.results)} results "
               f"({_size(results)}).")
    fig.supxlabel("\n".join(textwrap.wrap(caption, int(width * 72 / 4.6))), fontsize=8, color="#444444")
    return fig
