"""Matrix-multiply kernels: out[..., m, n] = Σ_k a[..., m, k] · b[..., k, n].

The classic tiled GEMM. The output of every batch entry is cut into BLOCK_M x BLOCK_N
tiles and one program computes one tile of one batch entry: it walks along k, BLOCK_K at a
time, loads a BLOCK_M x BLOCK_K tile of `a` and a BLOCK_K x BLOCK_N tile of `b`, and adds
their product (`tl.dot`) into an accumulator that stays in registers. Loads are masked,
so sizes need not be multiples of the blocks.

Both operands are read through their views: a transposed operand (`x @ w.T`, or the
permuted operands of the backward pass) and a broadcast batch dimension (stride 0) are
only other strides in the address arithmetic, never a copy.

A fused kernel also applies its epilogue (codegen/epilogue.py: bias add, activation, ...)
to the accumulator tile after the k loop, and stores what is needed outside.
"""
from __future__ import annotations

import re

from ops.errors import BackendError

from . import blocks
from .common import TL_DTYPE, KernelSource, address, digits, dims_needed
from .epilogue import Epilogue, Rider

# GPU tiles (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for the autotuner (runtime/executors/autotune.py), suited to
# Hopper: float32 goes through the tensor cores (tf32) or plain FMAs (ieee); float64 tiles
# are smaller since each element takes twice the shared memory.
GPU_CONFIGS = {
    "float32": [(128, 128, 32, 4, 4), (128, 256, 32, 8, 3), (256, 128, 32, 8, 3),
                (64, 128, 32, 4, 4), (128, 64, 32, 4, 4), (64, 64, 64, 4, 3)],
    "float64": [(64, 64, 16, 4, 3), (128, 64, 16, 4, 3), (64, 128, 16, 4, 3), (32, 32, 32, 2, 3)],
}


def generate(kernel, names, target):
    node = kernel.nodes[0]                  # the product; any nodes after it are its epilogue
    a, b = node.inputs
    if node.dtype not in ("float32", "float64"):
        raise BackendError(f"the Triton matmul kernel takes float32 or float64 operands, got "
                           f"{a.type_str} @ {b.type_str} (node {names[node]}); cast them, or use backend='reference'",
                           op=node.op, source=node.source)
    a_view, b_view = kernel.inputs[a], kernel.inputs[b]
    batch_shape = node.shape[:-2]
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    batches = _prod(batch_shape)
    acc_dtype = TL_DTYPE[node.dtype]
    out, an, bn = names[node], names[a], names[b]
    a_tile, b_tile = (f"{an}_tile", f"{bn}_tile") if a is not b else (f"{an}_left", f"{bn}_right")

    batched = batches > 1
    formula = (f"{out}[b, m, n] = Σ_k {an}[b, m, k] · {bn}[b, k, n]" if batched else
               f"{out}[m, n] = Σ_k {an}[m, k] · {bn}[k, n]")
    count = f"{batches} products of " if batched else ""
    epilogue = Epilogue(kernel, names)
    src = KernelSource(kernel, names, family_note=f"matmul, {count}[{M},{K}] @ [{K},{N}]"
                       + (f"; {epilogue.note()}" if epilogue else "") + epilogue.rider_note())
    # a sum of A along k is one value per row (stored by the first tile of each row of tiles),
    # a sum of B along k one per column (stored by the first tile of each column of tiles)
    riders = [(Rider(r, names, a_tile, 1, "(BLOCK_M, 1)", "[:, None]"), "rows", "row_mask", "tile % tiles_across == 0")
              if k == 0 else
              (Rider(r, names, b_tile, 0, "(1, BLOCK_N)", "[None, :]"), "cols", "col_mask", "tile // tiles_across == 0")
              for r, k in epilogue.riders.items()]

    # the batch index of each operand: split the program's batch number over the batch dims
    nb = len(batch_shape)
    needed = {d for d in dims_needed(a_view) | dims_needed(b_view) | epilogue.needed_dims() if d < nb} \
        if batched else set()
    batch_lines, batch_index = digits(batch_shape, "batch", var="b", only=needed)
    a_ptrs = _pointers(an, a_view, batch_index + ["rows", "ks[None, :]"], "(BLOCK_M, BLOCK_K)")
    b_ptrs = _pointers(bn, b_view, batch_index + ["ks[:, None]", "cols"], "(BLOCK_K, BLOCK_N)")
    out_where = " + ".join(([f"batch * {M * N}"] if batched else []) + [f"rows * {N}" if N != 1 else "rows", "cols"])
    # float32 products: tensor cores in tf32 (10-bit mantissas) or exact ieee; float64 has one way, and
    # tl.dot must be told its float64 accumulator (its out_dtype is float32 unless said otherwise)
    precision = ", out_dtype=tl.float64" if node.dtype == "float64" else \
        f', input_precision="{"tf32" if target.allow_tf32 else "ieee"}"'

    ins, outs = src.pointer_args()
    params = ", ".join([f"{p}_ptr" for p in ins + outs] +
                       ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr", "BLOCK_K: tl.constexpr"])
    body = ["@triton.jit", f"def {kernel.name}({params}):",
             f"    # {formula}",
             f"    # one program computes one BLOCK_M x BLOCK_N tile of the [{M},{N}] output"
             + (" of one batch entry" if batched else ""),
             "    tile = tl.program_id(0)"]
    if batched:
        body.append("    batch = tl.program_id(1)")
    rows = "rows = (tile // tiles_across) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]"
    cols = "cols = (tile % tiles_across) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]"
    width = max(len(rows), len(cols))
    body += [f"    tiles_across = tl.cdiv({N}, BLOCK_N)   # tiles are numbered row by row",
             f"    {rows:<{width}}   # the tile's m: a column",
             f"    {cols:<{width}}   # the tile's n: a row",
             f"    row_mask = rows < {M}",
             f"    col_mask = cols < {N}"]
    body += [f"    {line:<44}  # index along batch dim {d}" for d, line in batch_lines]
    body += [f"    acc = tl.zeros((BLOCK_M, BLOCK_N), {acc_dtype})   # the running Σ_k, in {node.dtype}"]
    body += [line for rider, *_ in riders for line in rider.start()]
    body += [
             f"    for k_start in range(0, {K}, BLOCK_K):",
             "        ks = k_start + tl.arange(0, BLOCK_K)",
             f"        k_mask = ks < {K}",
             f"        # {an}[rows, ks]: BLOCK_M x BLOCK_K, and {bn}[ks, cols]: BLOCK_K x BLOCK_N (zeros past the edges)",
             f"        {a_tile} = tl.load({a_ptrs}, mask=row_mask & k_mask[None, :], other=0.0)" + _cast(a, node),
             f"        {b_tile} = tl.load({b_ptrs}, mask=k_mask[:, None] & col_mask, other=0.0)" + _cast(b, node),
             f"        acc = tl.dot({a_tile}, {b_tile}, acc{precision})   # acc += {an}[rows, ks] @ {bn}[ks, cols]"]
    body += [line for rider, *_ in riders for line in rider.step()]
    if epilogue:
        body.append("    out_mask = row_mask & col_mask")
        body += epilogue.lines(src, batch_index + ["rows", "cols"], _tile_pointers, "out_mask", out_where, out_where,
                               "(BLOCK_M, BLOCK_N)")
    elif node in kernel.outputs:
        body.append(f"    tl.store({out}_ptr + {out_where}, acc, mask=row_mask & col_mask)")
    body += [line for rider, where, mask, first in riders for line in rider.store(where, mask, first)]
    src.body = body

    args = ", ".join(ins + outs)
    grid = _tile_count(M, N, "BLOCK_M", "BLOCK_N")
    src.launch = blocks.launch_lines(kernel.name, args, *_configs(node.dtype, M, N, K),
                              f"({grid}, {batches})" if batched else f"({grid},)")
    return src.text()


def _tile_count(M, N, block_m, block_n):
    return f"triton.cdiv({M}, {block_m}) * triton.cdiv({N}, {block_n})"


def _configs(dtype, M, N, K):
    """(GPU configs, interpreter configs): the block sizes to try, each tile edge cut down to
    what the shapes need, the first the one used untuned. Under the interpreter few, large
    programs win (a 1024^3 product: ~1.3 s with 128^3 tiles, ~0.3 s with 256 x 256 x 512);
    the others try smaller tiles and a longer step along k."""
    gpu = [{"BLOCK_M": blocks.tile(M, bm), "BLOCK_N": blocks.tile(N, bn), "BLOCK_K": blocks.tile(K, bk),
            "num_warps": warps, "num_stages": stages} for bm, bn, bk, warps, stages in GPU_CONFIGS[dtype]]
    interpreter = [{"BLOCK_M": blocks.tile(M, bm), "BLOCK_N": blocks.tile(N, bn), "BLOCK_K": blocks.tile(K, bk)}
                   for bm, bn, bk in ((256, 256, 512), (128, 128, 128), (256, 256, 2048))]
    return blocks.distinct(gpu), blocks.distinct(interpreter)


def _pointers(name, view, index, tile_shape):
    """The pointers of one operand's tile. A dimension of size 1 or stride 0 drops out of the
    address (every row, or column, reads the same memory), so the pointers are broadcast back
    to the tile's shape."""
    where = address(view, index)
    ptrs = f"{name}_ptr" if where == "0" else f"{name}_ptr + {where}"
    whole = all(size != 1 and stride != 0 for size, stride in zip(view.shape[-2:], view.strides[-2:]))
    return ptrs if whole else f"tl.broadcast_to({ptrs}, {tile_shape})"


def _tile_pointers(base, offset):
    """Pointers to the output tile's elements of an epilogue input (or output): broadcast to
    the whole tile when the address does not vary along both rows and cols."""
    ptrs = base if offset == "0" else f"{base} + {offset}"
    whole = re.search(r"\brows\b", offset) and re.search(r"\bcols\b", offset)
    return ptrs if whole else f"tl.broadcast_to({ptrs}, (BLOCK_M, BLOCK_N))"



def _cast(operand, node):
    """Mixed float32 @ float64: the float32 operand is widened, as NumPy does."""
    return f".to({TL_DTYPE[node.dtype]})" if operand.dtype != node.dtype else ""


def _prod(sizes):
    total = 1
    for s in sizes:
        total *= s
    return total
