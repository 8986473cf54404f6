# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12. Reading the generated Triton
#
# Every kernel chainrule generates is a small Python file: a header naming the graph nodes it
# computes and your source lines, one `@triton.jit` function — the code *one program
# instance* runs — and a plain `launch()` that picks the grid and starts the programs. Here we
# read kernels of three families, run them by hand, and replay a whole compiled step:
#
# * the **matmul** tile loop;
# * the **implicit-GEMM convolution**, and its two backward kernels (the gradients with
#   respect to the input and to the weight);
# * the fused **softmax** row kernel;
# * `run.py`, the script a dump writes to replay a compiled step kernel by kernel.
#
# Without a GPU the kernels run under Triton's *interpreter*: the body of the `@triton.jit`
# function is executed as ordinary Python, once per program instance, with NumPy doing the
# block arithmetic. That makes a program instance something we can watch line by line, like
# in a debugger — and re-implement in NumPy from the kernel's own index arithmetic.

# %%
import inspect
import linecache
import os
import re
import subprocess
import sys
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch

import compiler as C
import ops as O
from runtime.tutorial import Tutorial

tut = Tutorial("12_reading_triton")
rng = np.random.default_rng(0)


def random(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def kernel_of(program, index=0):
    """The source text, the launch() and the @triton.jit function of a program's kernel `index`."""
    executor = program.executor
    module = executor.modules[index]
    return executor.sources[index], module.launch, getattr(module, executor.schedule.kernels[index].name)


# %% [markdown]
# ## The matmul tile loop
#
# We compile a bare `a @ b` for a 40×24 and a 24×36 matrix. `program.source()` is the text of
# every generated kernel — here there is one:

# %%
def matmul(a, b):
    return a @ b


mm_program = C.compile(matmul, O.spec((40, 24)), O.spec((24, 36)), backend="interpret")
mm_source, mm_launch, mm_kernel = kernel_of(mm_program)
assert mm_program.source().count("@triton.jit") == 1
tut.show_code(mm_source, title=mm_program.compiled.files()[0][0])

# %% [markdown]
# Read it top to bottom:
#
# * The output is cut into `BLOCK_M × BLOCK_N` **tiles**; each program instance computes one.
#   `tl.program_id(0)` says which: the tiles are numbered row by row, `tiles_across` to a row.
# * `rows` and `cols` are the tile's row and column numbers, a column vector and a row vector:
#   `rows * 24 + ks[None, :]` broadcasts them into the 2-D block of *addresses* to load
#   (row-major: element `[m, k]` of `a` sits at `m·24 + k`). Shapes and strides are numbers in
#   the source, because the kernel is compiled for these shapes only.
# * The **K loop** walks the shared dimension `BLOCK_K` at a time: load a `BLOCK_M × BLOCK_K`
#   tile of `a` and a `BLOCK_K × BLOCK_N` tile of `b`, and let `tl.dot` add their product into
#   `acc`, which stays in registers and in float32 (`input_precision="ieee"`: no TF32 rounding).
# * **Masks**: a tile at the edge reaches past the matrix. Loads there read `other=0.0`
#   (zeros add nothing to the dot product) and the store skips those lanes.
# * `launch(a, b, t0, BLOCK_M=64, ...)` computes the grid — how many programs — and starts
#   them. Its default blocks suit a GPU; under the interpreter the executor passes the file's
#   `INTERPRETER_CONFIGS[0]` instead, where one program covers all 40×36. The kernel text is
#   the same for both: what a GPU would compile is what you read and what the interpreter runs.
#
# The executor calls `launch(*inputs, *outputs)` with torch tensors; we can do the same, with
# smaller blocks, so that there are several programs: 16×16 tiles make a 3×3 grid.

# %%
a, b = random(40, 24), random(24, 36)
a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
out = torch.full((40, 36), float("nan"))          # poison: an element no program writes stays NaN
mm_launch(a_t, b_t, out, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
print("max |kernel - numpy| =", float(np.abs(out.numpy() - a @ b).max()))
assert not np.isnan(out.numpy()).any() and np.allclose(out.numpy(), a @ b, atol=1e-5)

# %% [markdown]
# The picture shows how the nine programs share the output. What you should see: a 3×3 grid
# of 16×16 tiles numbered 0 to 8 row by row; the matrix (40×36, shaded) does not fill the last
# row and column of tiles, so programs 2, 5, 6, 7 and 8 are partly masked — program 8 stores
# only 8×4 of its 256 lanes.

# %%
BLOCK = 16
tiles_across, tiles_down = -(-36 // BLOCK), -(-40 // BLOCK)
fig, ax = plt.subplots(figsize=(5, 5))
ax.add_patch(plt.Rectangle((0, 0), 36, 40, color="#c7d2fe"))
for tile in range(tiles_across * tiles_down):
    top, left = (tile // tiles_across) * BLOCK, (tile % tiles_across) * BLOCK
    ax.add_patch(plt.Rectangle((left, top), BLOCK, BLOCK, fill=tile == 4, color="#fb923c", alpha=0.5))
    ax.add_patch(plt.Rectangle((left, top), BLOCK, BLOCK, fill=False, edgecolor="black"))
    ax.text(left + BLOCK / 2, top + BLOCK / 2, f"program {tile}", ha="center", va="center", fontsize=9)
ax.set_xlim(0, tiles_across * BLOCK)
ax.set_ylim(tiles_down * BLOCK, 0)
ax.set_xlabel("n (columns of the output; the matrix is 36 wide)")
ax.set_ylabel("m (rows; 40 tall)")
ax.set_title("the 40×36 output in 16×16 tiles (orange: program 4)")
tut.show(fig, "matmul_tiles")
stored = {tile: min(BLOCK, 40 - (tile // tiles_across) * BLOCK) * min(BLOCK, 36 - (tile % tiles_across) * BLOCK)
          for tile in range(tiles_across * tiles_down)}
print("lanes each program stores:", stored)
assert [t for t, lanes in stored.items() if lanes < BLOCK * BLOCK] == [2, 5, 6, 7, 8] and stored[8] == 8 * 4

# %% [markdown]
# ## Stepping through one program instance
#
# Under the interpreter a launch is a Python loop over the grid that calls the kernel's body
# once per program (`triton/runtime/interpreter.py`, `GridExecutor`). So we can watch one of
# those calls with Python's own tracing hook, `sys.settrace`, which debuggers are built on:
# `watch` launches the kernel and, for the chosen program only, records after every line it
# runs the variables that line set, as NumPy arrays. (The same works by hand: with
# `TRITON_INTERPRET=1`, a `breakpoint()` inside `if tl.program_id(0) == 4:` in a kernel file
# stops there.)

# %%
class Step(NamedTuple):
    line: int           # line number in the kernel's file
    code: str           # the line
    values: dict        # the variables the line set, as NumPy arrays (or Python numbers)


def as_numpy(value):
    """A block under the interpreter holds a NumPy array in `.handle.data`; constexprs hold `.value`."""
    handle = getattr(value, "handle", None)
    if handle is not None and hasattr(handle, "data"):
        data = np.array(handle.data)
        return data.reshape(()) if data.size == 1 and data.ndim <= 1 else data
    return getattr(value, "value", value)


def watch(kernel, grid, program, *args, **blocks):
    """Launch kernel[grid](*args, **blocks) under the interpreter and record program instance
    `program` (a tuple of program ids) line by line: a list of Steps."""
    code = kernel.fn.__code__           # the interpreter runs a rewritten copy: same file, same name
    params = set(inspect.signature(kernel.fn).parameters)
    grid = tuple(grid) + (1,) * (3 - len(grid))
    program = tuple(program) + (0,) * (3 - len(program))
    wanted = (program[0] * grid[1] + program[1]) * grid[2] + program[2]   # the grid runs x, then y, then z
    calls, steps, last = [0], [], {"line": None, "locals": {}}

    def each_line(frame, event, arg):
        if event in ("line", "return"):
            now = dict(frame.f_locals)    # the state after the previous line: that line's work
            if last["line"] is not None:
                changed = {name: as_numpy(v) for name, v in now.items()
                           if name not in params and last["locals"].get(name) is not v}
                text = linecache.getline(code.co_filename, last["line"]).split("  #")[0].strip()
                steps.append(Step(last["line"], text, changed))
            last["line"], last["locals"] = frame.f_lineno, now
        return each_line

    def each_call(frame, event, arg):
        if (frame.f_code.co_filename, frame.f_code.co_name) != (code.co_filename, code.co_name):
            return None
        calls[0] += 1
        return each_line if calls[0] - 1 == wanted else None

    previous = sys.gettrace()              # a debugger's, if one is running: put back afterwards
    sys.settrace(each_call)
    try:
        kernel[grid](*args, **blocks)
    finally:
        sys.settrace(previous)
    return steps


def summary(value):
    array = np.asarray(value)
    if array.size == 1:
        item = array.item()
        return f"{item:.4g}" if isinstance(item, float) else str(item)
    if array.dtype == bool:
        return f"bool{list(array.shape)}, {int(array.sum())} true"
    if array.dtype.kind in "iu":
        return np.array2string(array.ravel(), threshold=6, edgeitems=3) + f"  (shape {array.shape})"
    return f"{array.dtype}{list(array.shape)}, [0,0] = {array.flat[0]:.4g}"


def print_steps(steps):
    for step in steps:
        code = step.code if len(step.code) <= 56 else step.code[:55] + "…"
        print(f"{step.line:3d}  {code:57s} {'; '.join(f'{k} = {summary(v)}' for k, v in step.values.items())}")


def values_of(steps, name):
    """Every value `name` took, in order."""
    return [s.values[name] for s in steps if name in s.values]


out = torch.full((40, 36), float("nan"))
steps = watch(mm_kernel, (9,), (4,), a_t, b_t, out, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
print_steps(steps)

# %% [markdown]
# What you should see: program 4 finds it is tile 4 of a grid 3 tiles across, so its `rows`
# and `cols` are 16…31 — the middle tile. The K loop runs twice (`k_start` 0, then 16); in the
# second pass only 8 of the 16 `ks` are inside the 24 columns of `a` (`k_mask` has 8 true), the
# rest load zeros. Then one `tl.store`.
#
# Now the same program in NumPy, from the kernel's own index arithmetic — the addresses
# `a_ptr + rows * 24 + ks[None, :]` become indices into the flat array, the masks become
# `np.where`. Each K step's `acc` must equal what the kernel had, and the last one what it
# stored into its tile of `out`:

# %%
def load(flat, addresses, mask):
    """tl.load(ptr + addresses, mask=mask, other=0.0) over a flat array."""
    return np.where(mask, flat[np.where(mask, addresses, 0)], np.float32(0))


tile = 4
tiles_across = -(-36 // 16)
rows = (tile // tiles_across) * 16 + np.arange(16)[:, None]
cols = (tile % tiles_across) * 16 + np.arange(16)[None, :]
acc = np.zeros((16, 16), np.float32)
for k_step, (k_start, kernel_acc) in enumerate(zip(range(0, 24, 16), values_of(steps, "acc")[1:])):
    ks = k_start + np.arange(16)
    a_tile = load(a.ravel(), rows * 24 + ks[None, :], (rows < 40) & (ks[None, :] < 24))
    b_tile = load(b.ravel(), ks[:, None] * 36 + cols, (ks[:, None] < 24) & (cols < 36))
    acc = acc + a_tile @ b_tile
    print(f"K step {k_step}: max |numpy acc - kernel acc| = {np.abs(acc - kernel_acc).max():.1e}")
    assert np.allclose(acc, kernel_acc, atol=1e-5)
written = out.numpy()[16:32, 16:32]
print("the tile the kernel stored equals the NumPy program:", np.allclose(written, acc, atol=1e-5))
assert np.allclose(written, acc, atol=1e-5)
assert values_of(steps, "k_start") == [0, 16] and int(values_of(steps, "k_mask")[1].sum()) == 8

# %% [markdown]
# ## The implicit-GEMM convolution
#
# A convolution is a matrix product in disguise. Number the output pixels `m = (n, out_h,
# out_w)` and the taps of a filter `k = (c, kh, kw)`: then `out[m, o] = Σ_k A[m, k] · W[k, o]`,
# where `A[m, k]` is the input pixel that tap `k` of output pixel `m`'s window sits on. Building
# `A` in memory is *im2col*; the generated kernel never builds it — it computes the addresses
# of each tile of `A` on the fly (*implicit* GEMM) and runs the same tile loop as the matmul.
# Here: 2 images of 3×7×7, 4 filters of 3×3, stride 2, padding 1, so a 4×4 output.

# %%
def conv(x, w):
    return O.conv2d(x, w, stride=2, padding=1)


conv_program = C.compile(conv, O.spec((2, 3, 7, 7)), O.spec((4, 3, 3, 3)), backend="interpret")
conv_source, conv_launch, conv_kernel = kernel_of(conv_program)
tut.show_code(conv_source, start="@triton.jit", end="tl.store")

# %% [markdown]
# The loop body is the matmul's, with two index computations in front of the loads: `ks` is
# split into `(c, kh, kw)`, and the input row and column under the tap are
# `in_h = out_h·2 − 1 + kh` (stride 2, padding 1). Where that falls outside the 7×7 image —
# in the padding — the mask loads a zero. The output is `m × o` = 32 × 4 with K = 3·3·3 = 27.
#
# We run it with 16×16×16 blocks, so two programs along `m` and two K steps, and watch
# program (1, 0): output rows 16…31, which are all of image `n = 1`.

# %%
x, w = random(2, 3, 7, 7), random(4, 3, 3, 3)
x_t, w_t = torch.from_numpy(x), torch.from_numpy(w)
y_t = torch.full((2, 4, 4, 4), float("nan"))
conv_steps = watch(conv_kernel, (2, 1), (1, 0), x_t, w_t, y_t, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
print_steps(conv_steps[:14])                       # up to the first K step's taps
want = torch.nn.functional.conv2d(x_t, w_t, stride=2, padding=1).numpy()
print("max |kernel - torch conv2d| =", float(np.abs(y_t.numpy() - want).max()))
assert np.allclose(y_t.numpy(), want, atol=1e-5)
assert set(values_of(conv_steps, "n")[0].tolist()) == {1} and int(values_of(conv_steps, "col_mask")[0].sum()) == 4
assert values_of(conv_steps, "c")[0].tolist() == [0] * 9 + [1] * 7

# %% [markdown]
# In the trace, `n` is 1 in every lane, `out_h` and `out_w` walk the 4×4 output, `o` has 16
# lanes of which 4 are filters that exist (`col_mask`), and the first K step's 16 taps are the
# nine of channel 0 and the first seven of channel 1 (`c`, `kh`, `kw`).
#
# Now build `A` explicitly in NumPy with the kernel's index arithmetic — row `m` decoded into
# `(n, out_h, out_w)` and column `k` into `(c, kh, kw)` exactly as the kernel's lines do — and
# compare the tile program (1, 0) loaded in its first K step (`x_tile`) with rows 16…31,
# columns 0…15 of it. Then `A @ W` is the whole convolution.

# %%
def im2col(x, stride=2, padding=1, out_hw=4, k=3):
    """A[m, k] for every output pixel m and tap k (zeros in the padding), and where it is inside."""
    n_images, channels, height, width = x.shape
    m = np.arange(n_images * out_hw * out_hw)[:, None]
    ks = np.arange(channels * k * k)[None, :]
    n, out_h, out_w = m // (out_hw * out_hw), (m // out_hw) % out_hw, m % out_hw
    c, kh, kw = ks // (k * k), (ks // k) % k, ks % k
    in_h, in_w = out_h * stride - padding + kh, out_w * stride - padding + kw
    inside = (in_h >= 0) & (in_h < height) & (in_w >= 0) & (in_w < width)
    addresses = n * channels * height * width + c * height * width + in_h * width + in_w
    return load(x.ravel(), addresses, inside), inside


A, inside = im2col(x)
W = w.reshape(4, 27).T                                     # W[k, o] = w[o, c, kh, kw]
first_tile = values_of(conv_steps, "x_tile")[0]
print("A is", A.shape, "; the kernel's first x_tile equals A[16:32, 0:16]:", np.array_equal(first_tile, A[16:32, :16]))
assert np.array_equal(first_tile, A[16:32, :16])
as_image = (A @ W).reshape(2, 4, 4, 4).transpose(0, 3, 1, 2)   # rows (n, out_h, out_w) -> out[n, o, out_h, out_w]
assert np.allclose(as_image, want, atol=1e-5)

# %% [markdown]
# The picture is that product. What you should see: `A` is 32 rows (2 images × 16 output
# pixels) by 27 columns (3 channels × 9 taps); the black cells are taps that fall in the
# padding, zeros the kernel never loads. Every output pixel on the border of the 4×4 output
# has some — its window hangs over an edge of the 7×7 image, the bottom and right ones too
# (the window of `out_h = 3` covers rows 5, 6 and 7, and there is no row 7) — and only the 2×2
# inner pixels of each image have none: 8 rows of `A` without black. The solid orange frame is
# program (1, 0)'s first K step, rows 16…31 and columns 0…15: exactly the `x_tile` it loaded;
# the dashed frame is its second K step, columns 16…26 (the other 5 lanes of that step are
# masked: K is 27). Times `W` (27 × 4), `A` gives the 32 × 4 output.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 4.6), gridspec_kw={"width_ratios": [27, 4, 4]})
cmap = plt.get_cmap("coolwarm").copy()
cmap.set_bad("black")
for ax, matrix, title in zip(axes, [np.ma.masked_where(~inside, A), W, A @ W],
                             ["A (im2col, never built by the kernel)", "W", "A @ W"]):
    scale = np.abs(matrix).max()
    ax.imshow(matrix, cmap=cmap, vmin=-scale, vmax=scale, aspect="auto")
    ax.set_title(title, fontsize=10)
axes[0].add_patch(plt.Rectangle((-0.5, 15.5), 16, 16, fill=False, edgecolor="#ea580c", linewidth=3))
axes[0].add_patch(plt.Rectangle((15.5, 15.5), 11, 16, fill=False, edgecolor="#ea580c", linewidth=2, linestyle="--"))
axes[0].set_xlabel("k = (c, kh, kw)")
axes[0].set_ylabel("m = (n, out_h, out_w)")
axes[1].set_xlabel("o")
axes[2].set_xlabel("o")
tut.show(fig, "implicit_gemm")
print(f"{int((~inside).sum())} of {inside.size} entries of A are padding")
rows_without_padding = np.flatnonzero(inside.all(axis=1))
print("rows of A without padding:", rows_without_padding.tolist())
interior = [(m // 16, (m // 4) % 4, m % 4) for m in rows_without_padding.tolist()]
assert len(interior) == 8 and all(1 <= oh <= 2 and 1 <= ow <= 2 for _, oh, ow in interior)

# %% [markdown]
# ## The two backward kernels
#
# Differentiate `Σ conv(x, w) · g` — its gradient with respect to the convolution's output is
# exactly `g` — with respect to `x` and `w`. The chain rule turns the one `conv2d` into two
# more convolutions, each an implicit GEMM over the same three tensors in other roles:
#
# | kernel | output rows `m` | output columns | reduction `k` | A | B |
# |---|---|---|---|---|---|
# | `conv2d` | (n, out_h, out_w) | o | (c, kh, kw) | x under the tap | w |
# | `conv2d_grad_input` | (n, in_h, in_w) | c | (o, kh, kw) | g at the output pixel whose tap lands here | w |
# | `conv2d_grad_weight` | o | (c, kh, kw) | (n, out_h, out_w) | g | x under the tap |

# %%
def conv_loss(x, w, g):
    return O.sum(O.conv2d(x, w, stride=2, padding=1) * g)


grad_program = C.compile(conv_loss, O.spec((2, 3, 7, 7)), O.spec((4, 3, 3, 3)), O.spec((2, 4, 4, 4)),
                         grad_argnums=(0, 1), backend="interpret")
files = [name for name, _ in grad_program.compiled.files()]
print(files)
assert len(files) == 4
g = random(2, 4, 4, 4)
value, (dx, dw) = grad_program(x, w, g)

# %% [markdown]
# Four kernels: the forward convolution, the loss (`mul` and `sum` fused) and the two
# backward convolutions. In the joint graph `x`, `w`, `g` are `primals_1`, `primals_2`,
# `primals_3`; the loss's gradient with respect to the convolution's output is the seed (a
# broadcast 1.0) times `g`, which simplify reduces to `g` itself, so both backward kernels read
# `primals_3` directly. The gradient with respect to the input:

# %%
grad_input_index = next(i for i, name in enumerate(files) if "grad_input" in name)
grad_weight_index = next(i for i, name in enumerate(files) if "grad_weight" in name)
grad_input_source, grad_input_launch, grad_input_kernel = kernel_of(grad_program, grad_input_index)
grad_weight_source, _, grad_weight_kernel = kernel_of(grad_program, grad_weight_index)
tut.show_code(grad_input_source, start="for k_start", end="acc = tl.dot")

# %% [markdown]
# Each program owns *input* pixels and gathers, for each one, the output pixels whose window
# covered it: tap `(kh, kw)` of output pixel `out_h` sits on `in_h = out_h·2 − 1 + kh`, so
# `out_h·2 = in_h + 1 − kh` — which must be even (stride 2) and not negative. No two programs
# write the same pixel, so no atomic additions are needed (the *gather* form). The generator
# writes only the tests that can fail: `in_h + 1 − kh` lies between −1 and 7 here, so
# `out_h ≤ 3` always and there is no `out_h < 4` in the mask.
#
# Let us watch which taps pixel `(in_h, in_w) = (3, 3)` of image 0 gathers: row `m = 3·7 + 3 =
# 24` of the kernel's `primals_3_mask`, whose columns are `k = (o, kh, kw)`.

# %%
dx_t = torch.full((2, 3, 7, 7), float("nan"))
g_t = torch.from_numpy(g)
launch_blocks = {name: p.default for name, p in inspect.signature(grad_input_launch).parameters.items()
                 if name.startswith("BLOCK")}                   # launch()'s defaults: a GPU's blocks,
launch_blocks.update(grad_program.executor.launch_configs[grad_input_index])   # the interpreter's: one program
print("launch() blocks:", launch_blocks)
input_steps = watch(grad_input_kernel, (1, 1), (0, 0), g_t, w_t, dx_t, **launch_blocks)
mask_row = values_of(input_steps, "primals_3_mask")[0][24, :36]            # lanes 36..63 of the K block: past K
taps = [(int(k) // 9, (int(k) // 3) % 3, int(k) % 3) for k in np.flatnonzero(mask_row)]
print(f"pixel (3, 3) gathers {len(taps)} of {mask_row.size} (o, kh, kw):", sorted({(kh, kw) for _, kh, kw in taps}),
      "for each o")
assert sorted({(kh, kw) for _, kh, kw in taps}) == [(0, 0), (0, 2), (2, 0), (2, 2)] and len(taps) == 16
assert np.allclose(dx_t.numpy(), dx, atol=1e-5)

# %% [markdown]
# Only the taps with `kh` and `kw` in {0, 2}: with stride 2, the windows of two output pixels
# in a row overlap in one column, and pixel 3 is the right edge of one window (tap 2) and the
# left edge of the next (tap 0). The gradient with respect to the weight is a GEMM whose
# reduction runs over the batch and the output pixels — `g` (`primals_3`) is A, `x` under the tap is B:

# %%
tut.show_code(grad_weight_source, start="for k_start", end="acc = tl.dot")

# %% [markdown]
# With the im2col matrix `A` from before and `G[m, o] = g[n, o, out_h, out_w]`, both gradients
# are one line of NumPy each. The weight's gradient is `Gᵀ @ A`. The input's gradient is
# `G @ Wᵀ`, a gradient for every entry of `A`, *scattered* back to the pixel each entry was
# read from (`np.add.at` adds where taps overlap) — the kernel computes the same sums by
# gathering.

# %%
G = g.transpose(0, 2, 3, 1).reshape(32, 4)                 # rows (n, out_h, out_w), columns o
dw_numpy = (G.T @ A).reshape(4, 3, 3, 3)
dA = G @ W.T                                               # [32, 27]: ∂loss/∂A
m, k = np.nonzero(inside)                                  # scatter every entry inside the image
n_of, oh, ow = m // 16, (m // 4) % 4, m % 4
c_of, kh, kw = k // 9, (k // 3) % 3, k % 3
dx_numpy = np.zeros_like(x)
np.add.at(dx_numpy, (n_of, c_of, oh * 2 - 1 + kh, ow * 2 - 1 + kw), dA[m, k])
print("max |kernel - numpy|: grad_input", float(np.abs(dx - dx_numpy).max()), " grad_weight",
      float(np.abs(dw - dw_numpy).max()))
assert np.allclose(dx, dx_numpy, atol=1e-5) and np.allclose(dw, dw_numpy, atol=1e-5)
assert np.allclose(dx, torch.nn.grad.conv2d_input(x_t.shape, w_t, g_t, stride=2, padding=1).numpy(), atol=1e-5)

# %% [markdown]
# ## The fused softmax row kernel
#
# `softmax(x, dim=1)` is five primitives — a row max, a subtraction, `exp`, a row sum, a
# division. Fusion makes them one *row kernel*: a program loads whole rows once, keeps them in
# registers and reduces them as often as needed.

# %%
def softmax_rows(x):
    return O.softmax(x, dim=1)


softmax_program = C.compile(softmax_rows, O.spec((6, 10)), backend="interpret")
softmax_source, softmax_launch, softmax_kernel = kernel_of(softmax_program)
tut.show_code(softmax_source, start="@triton.jit", end="tl.store")

# %% [markdown]
# A program takes `BLOCK_ROWS` rows and `BLOCK_COLS` ≥ 10 columns — a power of two, so 16 —
# and the lanes past the edges are masked. Subtracting the row max `t0` first keeps `exp`
# from overflowing (the numerically stable form of tutorial 6); the masks decide what the
# reductions see: `tl.where(mask, x, -inf)` so a padding lane never wins the max, and
# `tl.where(mask, t2, 0)` so it adds nothing to the sum. With `BLOCK_ROWS=4` there are two
# programs; we watch the second, which holds rows 4…7 of a tensor that has 6.

# %%
logits = random(6, 10) * 3
probabilities = torch.full((6, 10), float("nan"))
with np.errstate(all="ignore"):                    # the masked lanes compute -inf - -inf, quietly
    softmax_steps = watch(softmax_kernel, (2,), (1,), torch.from_numpy(logits), probabilities,
                          BLOCK_ROWS=4, BLOCK_COLS=16)
print_steps(softmax_steps)
block = {name: values_of(softmax_steps, name)[-1] for name in ("mask", "t0", "t3", "t4")}
print("row max t0:", block["t0"].ravel(), "\nrow sum t3:", block["t3"].ravel())
print("t4 in the missing rows (first 3 lanes):", block["t4"][2:, :3].tolist())

# %% [markdown]
# What you should see: `rows` is 4…7 and only rows 4 and 5 exist, so `mask` has 2 × 10 = 20
# true lanes of 64. The row max `t0` of the two missing rows is `-inf` (every lane masked), so
# `t1 = 0 − (−inf)` and `t2 = exp(t1)` are `inf`, their `t3` is 0 and their `t4 = inf / 0` is
# `inf` — garbage that is never stored, because `tl.store` takes the same mask. The rows that
# exist match NumPy's stable softmax:

# %%
stable = np.exp(logits - logits.max(axis=1, keepdims=True))
stable /= stable.sum(axis=1, keepdims=True)
print("max |kernel - numpy| on rows 4, 5:", float(np.abs(probabilities.numpy()[4:] - stable[4:]).max()))
assert np.allclose(block["t4"][:2, :10], stable[4:], atol=1e-6)
assert np.allclose(probabilities.numpy()[4:], stable[4:], atol=1e-6)
assert np.isneginf(block["t0"][2:]).all() and (block["t3"][2:] == 0).all() and np.isposinf(block["t4"][2:]).all()

fig, ax = plt.subplots(figsize=(8, 2.6))
ax.imshow(np.where(block["mask"], block["t4"], np.nan), cmap="viridis", vmin=0, vmax=1, aspect="auto")
ax.imshow(np.where(block["mask"], np.nan, 1.0), cmap="Greys", vmin=0, vmax=2, aspect="auto")
ax.set_yticks(range(4), [f"row {r}" for r in range(4, 8)])
ax.set_xlabel("column (lanes 10 to 15 are padding)")
for row, col in zip(*np.nonzero(block["mask"])):
    ax.text(col, row, f"{block['t4'][row, col]:.2f}", ha="center", va="center", fontsize=7, color="white")
ax.set_title("program 1's block: stored softmax values (colour) and masked lanes (grey)")
tut.show(fig, "softmax_block")

# %% [markdown]
# ## Replaying a compiled step: `run.py`
#
# `program.dump(folder)` writes, next to the kernels, `run.py` (made by `compiler/repro.py`): a
# script that replays the step without chainrule's compiler. The schedule is written into it
# as data — which file, which buffers it reads, which it writes:

# %%
dump_dir = tut.path("conv_backward")
grad_program.dump(dump_dir)
run_py = open(os.path.join(dump_dir, "run.py")).read()
table = run_py[run_py.index("KERNELS = ["):]
print(table[:table.index("\n]\n") + 2])

# %% [markdown]
# and its loop is the executor's (`runtime/executors/triton.py`): import each file, allocate
# outputs poisoned with values no kernel writes (NaN, or the most negative integer), and call
# `launch(*inputs, *outputs)` — an input that is a view (a transpose, a broadcast) is passed as
# the buffer it views, because the kernel's addresses already contain its strides:

# %%
tut.show_code(run_py, start="def run_kernels", end="env.update(")

# %% [markdown]
# Every kernel file ends with its `launch`, which only computes the grid and starts the
# programs; the block sizes are keyword arguments whose defaults suit a GPU. Above it,
# `CONFIGS` lists the blocks a GPU's autotuner may choose among and `INTERPRETER_CONFIGS` the
# interpreter's (few, large programs), which run.py and the executor pass on the CPU:

# %%
tut.show_code(grad_input_source, start="def launch")

# %% [markdown]
# Now run the dumped script as you would from a shell, `python run.py --seed 1`. (The child
# process gets an environment without `TRITON_INTERPRET`, so that run.py chooses for itself:
# the GPU when there is one, else the interpreter.)

# %%
child_env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
result = subprocess.run([sys.executable, os.path.join(dump_dir, "run.py"), "--seed", "1"], capture_output=True,
                        text=True, timeout=120, env=child_env)
print(result.stdout)
assert result.returncode == 0 and " (ok: " in result.stdout.strip().splitlines()[-1], result.stderr[-2000:]

# %% [markdown]
# `run.py` ran the five kernels on fresh random inputs and compared every output with the
# NumPy reference executor on `02_simplified.py`. The kernels it replays are the files in
# `kernels/`, the same text here under the interpreter as on a machine with a GPU, where
# run.py replays them on the GPU — a dump is a self-contained bug report.
#
# ## Exercises
#
# **Exercise 1.** In the 40×36 matmul with 16×16 tiles (the picture above), which program
# instance computes `out[37, 20]`? The check watches the program you name and looks at its
# `rows` and `cols`.

# %%
answer_1 = (37 // 16) * 3 + 20 // 16                                           # your answer here
named = watch(mm_kernel, (9,), (answer_1,), a_t, b_t, torch.empty(40, 36), BLOCK_M=16, BLOCK_N=16, BLOCK_K=16)
tut.check(1, "the program that writes out[37, 20]",
          got=37 in values_of(named, "rows")[0] and 20 in values_of(named, "cols")[0],
          hint="tiles are numbered row by row, 3 to a row: row of tiles 37 // 16, column of tiles 20 // 16")

# %% [markdown]
# **Exercise 2.** `conv2d_grad_weight` is a GEMM `[M × K] @ [K × N]` (rows `o`, reduction
# `(n, out_h, out_w)`, columns `(c, kh, kw)`). Give (M, K, N) for our x of 2×3×7×7, w of
# 4×3×3×3, stride 2, padding 1. The check reads them from the kernel file's first line.

# %%
answer_2 = (4, 2 * 4 * 4, 3 * 3 * 3)                                          # your answer here
header = grad_weight_source.splitlines()[0]                     # "... as an implicit GEMM [M x K] @ [K x N]; ..."
m_size, k_size, n_size = (int(v) for v in re.search(r"GEMM \[(\d+) x (\d+)\] @ \[\d+ x (\d+)\]", header).groups())
tut.check(2, "the weight gradient's GEMM shape (M, K, N)", got=answer_2, want=(m_size, k_size, n_size))

# %% [markdown]
# **Exercise 3.** Softmax of a 6×10 tensor with `BLOCK_ROWS=4, BLOCK_COLS=16`: how many lanes
# of program 0's 4×16 block store a value? The check watches program 0 and counts its mask.

# %%
answer_3 = 4 * 10                                                              # your answer here
first_program = watch(softmax_kernel, (2,), (0,), torch.from_numpy(logits), torch.empty(6, 10),
                      BLOCK_ROWS=4, BLOCK_COLS=16)
tut.check(3, "stored lanes of softmax program 0", got=answer_3, want=int(values_of(first_program, "mask")[0].sum()))

# %%
tut.done()
