"""Horizontal kernels: several independent pointwise kernels in one launch.

Sibling fusion (compiler/fusion.py) bundles pointwise kernels that read the same buffer
and do not depend on each other, such as the optimizer's update of every parameter. Each
keeps its own iteration space; the launch's programs are split among them, in order:

    pid = tl.program_id(0)
    end_0 = tl.cdiv(300, BLOCK)
    if pid < end_0:                 # programs [0, end_0) compute the first part
        offs = pid * BLOCK + tl.arange(0, BLOCK)             # its own lanes
        ...
    else:                           # programs [end_0, the last) compute the second
        offs = (pid - end_0) * BLOCK + tl.arange(0, BLOCK)
        ...

Each branch is exactly the body of the pointwise kernel it replaces (codegen/pointwise.py).
What it saves is launches: one instead of one per part, which on a GPU is a few
microseconds each (PyTorch's multi-tensor `foreach` optimizers do the same).
"""
from __future__ import annotations

from ..fusion import segments
from ..lower import Kernel
from . import blocks
from .common import KernelSource
from .pointwise import segment


def generate(kernel, names, target):
    parts = []
    for nodes in segments(kernel.nodes):
        members = set(nodes)
        needed = {i for n in nodes for i in n.inputs if i not in members}
        part = Kernel(kernel.index, "pointwise", nodes, {i: v for i, v in kernel.inputs.items() if i in needed},
                      [o for o in kernel.outputs if o in members])
        parts.append(part)
    src = KernelSource(kernel, names, family_note=f"{len(parts)} independent pointwise kernels in one launch "
                       "(horizontal fusion): the programs are split among them")
    body, sizes, branches = ["    pid = tl.program_id(0)"], [], []
    for k, part in enumerate(parts):
        start = "pid" if k == 0 else f"(pid - end_{k - 1})"
        n, lines = segment(part, names, src, start)
        sizes.append(n)
        last = k == len(parts) - 1
        if not last:            # where this part's programs end (the last part takes the rest)
            body.append(f"    end_{k} = {f'end_{k - 1} + ' if k else ''}tl.cdiv({n}, BLOCK)")
        what = f"{', '.join(names[o] for o in part.outputs)} ({part.outputs[0].type_str})"
        span = f"programs [{f'end_{k - 1}' if k else '0'}, {'the last' if last else f'end_{k}'})"
        head = "else:" if last else f"{'if' if k == 0 else 'elif'} pid < end_{k}:"
        branches.append(f"    {head:<24}  # {span} compute {what}")
        branches += ["    " + line for line in lines]
    body += branches
    ins, outs = src.pointer_args()
    params = ", ".join([f"{p}_ptr" for p in ins + outs] + ["BLOCK: tl.constexpr"])
    src.body = ["@triton.jit", f"def {kernel.name}({params}):"] + body
    args = ", ".join(ins + outs)
    programs = " + ".join(f"triton.cdiv({n}, BLOCK)" for n in sizes)
    src.launch = blocks.launch_lines(kernel.name, args, *blocks.pointwise(max(sizes)), f"({programs},)")
    return src.text()
