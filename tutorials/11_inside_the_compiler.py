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
# # 11. Inside the compiler
#
# The tutorials so far used the compiler as a black box: a function in, a gradient out. Here we
# open it. We compile one training step of a small LeNet-style CNN (loss and every parameter's
# gradient) and read what each pass made of it:
#
# * **fusion** — which primitives share a kernel, and for every pair that did not fuse, why;
# * **bytes moved** — what the kernels read and write, before and after fusion, against the
#   traffic no schedule can avoid;
# * **the memory plan** — every buffer's lifetime and its place in one arena;
# * **saved activations** — what the forward keeps for the backward, and why;
# * **rematerialization** — recomputing cheap values instead of saving them, and what it
#   actually bought here.
#
# Every number below is computed by the compiler in this run; the pictures go to
# `tutorials/out/11_inside_the_compiler/`.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from compiler import cost
from compiler.lower import lower
from compiler.memory import verify
from compiler.saved import saved_bytes, saved_report, saved_values
from runtime.tutorial import Tutorial

tut = Tutorial("11_inside_the_compiler")

# %% [markdown]
# ## The step we compile
#
# Conv → ReLU → MaxPool twice, then two dense layers and the cross-entropy loss, on a batch of
# 16 images of 8×8 pixels (the digits' size). The parameters come first so that `grad_argnums`
# can name them; `C.compile` traces the function, derives the backward by the chain rule,
# simplifies, fuses, plans memory and generates one Triton kernel file per fused group.
# `backend="interpret"` runs those kernels under Triton's interpreter on the CPU.

# %%
def cnn_loss(c1, cb1, c2, cb2, w1, b1, w2, b2, x, y):
    h = O.max_pool2d(O.relu(O.conv2d(x, c1, cb1, padding=1)), 2)     # [16, 6, 4, 4]
    h = O.max_pool2d(O.relu(O.conv2d(h, c2, cb2, padding=1)), 2)     # [16, 16, 2, 2]
    h = O.relu(O.linear(O.flatten(h, 1), w1, b1))                    # [16, 84]
    return O.cross_entropy(O.linear(h, w2, b2), y)


BATCH = 16
rng = np.random.default_rng(0)
params = [rng.standard_normal(shape).astype(np.float32) * np.float32(np.sqrt(2 / fan_in))
          for shape, fan_in in [((6, 1, 3, 3), 9), ((6,), 9), ((16, 6, 3, 3), 54), ((16,), 54),
                                ((84, 64), 64), ((84,), 64), ((10, 84), 84), ((10,), 84)]]
x = rng.standard_normal((BATCH, 1, 8, 8)).astype(np.float32)
y = rng.integers(0, 10, BATCH)
specs = [O.spec(p.shape) for p in params] + [O.spec(x.shape), O.spec(y.shape, "int64")]
PARAMS = tuple(range(8))

program = C.compile(cnn_loss, *specs, grad_argnums=PARAMS, backend="interpret")
report = program.report()
print("primitives:", report["nodes"])
print(f"kernels: {report['kernels']} fused, {report['unfused_kernels']} without fusion")

# %% [markdown]
# The forward has 41 primitives; the chain rule adds the backward (83 in all), and simplify
# (constant folding, common subexpressions, dead code) leaves 72. Without fusion each of the
# 58 that compute something would be a kernel of its own; fusion makes 16. First make sure the
# kernels compute the right thing: the same step through the NumPy reference executor.

# %%
assert report["nodes"] == {"forward": 41, "joint": 83, "simplified": 72}
assert (report["kernels"], report["unfused_kernels"]) == (16, 58)

loss, grads = program(*params, x, y)
reference = C.compile(cnn_loss, *specs, grad_argnums=PARAMS, backend="reference")
ref_loss, ref_grads = reference(*params, x, y)
worst = max(np.linalg.norm(g - r) / np.linalg.norm(r) for g, r in zip(grads, ref_grads))
print(f"loss {float(loss):.5f} (reference {float(ref_loss):.5f}); worst relative gradient error {worst:.1e}")
assert worst < 1e-4

# %% [markdown]
# `program.dump(folder)` writes everything the compile made into one folder a learner can read
# top to bottom: the programs at each stage (`00_trace.py`, `01_joint.py`, `02_simplified.py`),
# the fusion groups (`03_fusion.txt`), the memory plan (`04_memory.txt`), the saved values
# (`05_saved.txt`), every kernel under `kernels/`, `run.py` (tutorial 12), and four pictures
# (`program.render(folder)` draws just those).

# %%
written = program.dump(tut.path("step"))
print("\n".join(sorted(os.path.relpath(path, tut.path("step")) for path in written)))
pictures = {name: tut.picture(written, name) for name in ("forward", "backward", "kernels", "memory")}

# %% [markdown]
# **The forward.** What you should see: grey ovals for the data `x` and `y`, green ovals with
# a bold rim for the eight parameters, and every call of a composite — conv2d, relu,
# max_pool2d, linear, cross_entropy — as a dashed cluster named after its line in
# `cnn_loss`. A conv2d is a `conv2d` primitive plus a bias `add` (the bias reshaped to
# `[1,6,1,1]`); relu is `le` (the mask of x ≤ 0) and `where`; max_pool2d is `window_argmax` (where
# each window's maximum is) and `window_gather` (fetch it). The amber box at the bottom is
# the loss.

# %%
tut.show_file(pictures["forward"])

# %% [markdown]
# **The backward.** The forward is faded; the backward is orange and starts at the dotted
# *seed* edge under the loss. It ends in eight dark-orange boxes, one `∂loss/∂…` per
# parameter. The dashed edges are the values the forward *saved* for the backward — they stay
# in memory from the moment they are made until the backward reads them, which is what the
# memory plan below is about. The Σ adds the two paths by which the logits reach the loss:
# the direct one through log_softmax's subtraction (−onehot/16, the seed's `expand (-0.0625)`
# times the saved one-hot) and the one through `exp` and the row sum (softmax/16): together
# (p − onehot)/16, tutorial 6's formula.

# %%
tut.show_file(pictures["backward"])

# %% [markdown]
# ## Fusion: which primitives share a kernel
#
# `compiler/fusion.py` groups the simplified graph's primitives into kernels, greedily, and
# returns a `FusionPlan`; `plan.text(schedule)` is the file `03_fusion.txt` of the dump. Its
# first part lists the kernels in launch order, each with its file under `kernels/`, the names
# of its values (as in `02_simplified.py`) and its primitives:

# %%
fusion = program.compiled.fusion
fusion_text = fusion.text(program.schedule)
assert open(tut.path("step/03_fusion.txt")).read() == fusion_text
print(fusion_text.split("did not fuse")[0])
loss_kernel = next(g for g in fusion.groups if any(n.op == "log" for n in g))
assert len(loss_kernel) == 30 and loss_kernel[0].op == "add" and loss_kernel[-1].op == "add"

# %% [markdown]
# Five kinds of fusion are at work:
#
# * **GEMM + epilogue** — `[conv2d add le where]`: the bias add and the ReLU run on the
#   convolution's accumulator tile in registers, before it is stored. The same on the first
#   dense layer, `[matmul add le where]`.
# * **max pooling** — `[window_argmax window_gather]`: one kernel finds each window's maximum
#   and stores both the value and where it was (the backward routes the gradient there).
# * **a row kernel** — the long group of 30 primitives, `add reduce_max sub exp … mul add`: the
#   last bias add, log_softmax, the loss, *and the loss's gradient with respect to the logits*
#   (ending in the Σ) are one kernel. Each row of 10 logits is loaded once and stays in
#   registers.
# * **riding along** — `[matmul reduce_sum]`, "rides along the matmul's K loop": the bias
#   gradient Σ over the batch of ∂loss/∂out is added up from the tiles that the weight
#   gradient's K loop loads anyway. Same for both convolutions' weight gradients.
# * **backward epilogues** — `[window_scatter where]`: the max-pool backward and ReLU's mask
#   in one kernel; `[matmul where]`: the gradient `dy @ W` times the mask. (A kernel is named
#   after the composites its nodes come from, so this backward kernel's file is
#   `07_linear_relu.py`, like the forward's `04_linear_relu.py`.)
#
# **The kernels picture** draws every kernel as a purple cluster, named as its file
# (`k00_fwd_conv2d_relu` is `kernels/00_fwd_conv2d_relu.py`) with the bytes it reads and writes; the
# views between them (a `permute` is a transpose, a `reshape` of contiguous data) are small
# notes: they cost no kernel, the next kernel reads through their strides. The inputs carry
# the joint graph's names, `primals_1` … `primals_10` in the order of `cnn_loss`'s arguments
# (`primals_1` is `c1`, `primals_9` is `x`), as in `01_joint.py`, `03_fusion.txt` and the
# kernel files.

# %%
tut.show_file(pictures["kernels"])

# %% [markdown]
# ### Why pairs did not fuse
#
# For every producer → consumer pair that ended up in different kernels, the plan keeps the
# reason in words. There are many; sorted by kind they are few:

# %%
VIEWS = ("reshape", "permute", "expand", "slice")
KINDS = [("a view between them (reshape, permute): it costs no kernel anyway", None),
         ("it would have to join a GEMM's loads (a prologue): not implemented", ("prologue",)),
         ("window, conv and matmul kernels stay kernels of their own", ("kernels of their own",
                                                                         "is a window kernel")),
         ("a cycle: the kernel would wait for itself", ("wait for itself",)),
         ("an epilogue only takes pointwise work over the GEMM's output shape", ("epilogue",))]


def kind_of(producer, consumer, reason):
    if producer.op in VIEWS or consumer.op in VIEWS:
        return KINDS[0][0]
    return next((k for k, words in KINDS[1:] if any(w in reason for w in words)), "other")


by_kind = {}
for producer, consumer, reason in fusion.rejected:
    by_kind.setdefault(kind_of(producer, consumer, reason), []).append((producer, consumer, reason))
names = program.compiled.names
for kind, pairs in by_kind.items():
    producer, consumer, reason = pairs[0]
    print(f"{len(pairs):2d} × {kind}\n     e.g. {names[producer]} ({producer.op}) -> {names[consumer]} "
          f"({consumer.op}): {reason}")
assert "other" not in by_kind and sum(map(len, by_kind.values())) == len(fusion.rejected)

# %% [markdown]
# Most rejections are harmless — a view costs nothing whether it fuses or not (the bias `add`
# in `k00` reads the bias through the `[1,6,1,1]` view, broadcast) — or name work the
# generators do not do yet: a GEMM (matmul, conv) or a pooling window takes pointwise
# work *after* it (an epilogue) but not *before* it, in its loads (a prologue). The cycle is
# the interesting one. Here it is in full:

# %%
cycles = by_kind["a cycle: the kernel would wait for itself"]
for producer, consumer, reason in cycles:
    print(f"{names[producer]} = {producer.op}  ({producer.role})  ->  {names[consumer]} = {consumer.op}  "
          f"({consumer.role}): {reason}")
assert all(p.role == "forward" and c.role == "backward" for p, c, _ in cycles)

# %% [markdown]
# Each producer is ReLU's mask, `le`, computed by the *forward*; each consumer is the
# `where` that applies the mask in the *backward*. One kernel cannot hold both: the backward's
# `where` needs the gradient coming down from the loss, and the loss needs the forward
# kernel's output first. A path leaves the merged kernel and comes back into it, so the
# kernel would wait for itself. The mask must be stored by the forward and read back by the
# backward — it is a *saved value*, and it shows up again in the memory plan and in
# `05_saved.txt`.

# %% [markdown]
# ## Bytes moved, before and after fusion
#
# A kernel keeps its intermediates in registers; what it costs in memory traffic is what it
# loads and stores (`compiler/cost.py`). Three totals judge a schedule:
#
# * `dram_bytes` of the unfused schedule — every primitive a kernel (`lower(graph)` with no
#   fusion plan);
# * `dram_bytes` of the fused schedule — what the 16 kernels move (`Program.report()`);
# * `min_dram_bytes` — the *compulsory* traffic, whatever the schedule: inputs read once,
#   outputs written once, every saved value written once and read once.

# %%
unfused = lower(program.graph)
traffic = {"unfused (58 kernels)": cost.dram_bytes(unfused),
           "fused (16 kernels)": report["dram_bytes"],
           "compulsory": report["min_dram_bytes"]}
for what, nbytes in traffic.items():
    print(f"{what:22s} {nbytes:>8} bytes")
print("compulsory parts:", cost.compulsory(program.graph))
assert len(unfused.kernels) == 58 and report["dram_bytes"] == cost.dram_bytes(program.schedule)

# %% [markdown]
# Per kernel (`report["kernel_bytes"]`), drawn below: each bar is one fused kernel, what it
# reads (light) and writes (dark). What you should see: on the left, the totals — fusion
# roughly halves the traffic, and what is left is a bit over twice the compulsory part; on the
# right, the three busiest kernels all touch the first convolution's output `[16,6,8,8]`, the
# largest tensor of the step: `k00` writes it (and its ReLU mask), `k01` reads it back to pool
# it, and in the backward `k14` writes its gradient at full size (the pooling backward). None
# of that is compulsory: with pooling as the convolution's epilogue the full-size output would
# never reach memory — fusion the generators do not do (yet).

# %%
rows = report["kernel_bytes"]
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1, 3]})
left.bar(range(3), [v / 1024 for v in traffic.values()], color=["0.6", "tab:purple", "tab:green"])
left.set_xticks(range(3), [k.split(" (")[0] for k in traffic], rotation=20)
left.set_ylabel("KB moved (read + written)")
left.set_title("the whole step")
read = np.array([r["bytes_read"] for r in rows]) / 1024
written = np.array([r["bytes_written"] for r in rows]) / 1024
right.bar(range(len(rows)), read, color="#c4b5fd", label="read")
right.bar(range(len(rows)), written, bottom=read, color="#6d28d9", label="written")
right.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=60, ha="right", fontsize=7)
right.set_title("per fused kernel, in launch order")
right.legend()
tut.show(fig, "bytes")

busiest = sorted(rows, key=lambda r: -(r["bytes_read"] + r["bytes_written"]))[:3]
print("the three busiest kernels:", [r["name"] for r in busiest])
assert {r["name"][:3] for r in busiest} == {"k00", "k01", "k14"}
assert 1.8 < traffic["unfused (58 kernels)"] / report["dram_bytes"] < 2.5
assert 2 < report["dram_bytes"] / report["min_dram_bytes"] < 2.5

# %% [markdown]
# ## The memory plan
#
# Every kernel output is a buffer. `compiler/memory.py` computes when each is *live* — from
# the kernel (step) that writes it to the last kernel that reads it — and places all of them
# in one arena so that buffers live at the same time never overlap, and buffers live at
# different times share memory. Inputs, parameters and the step's results (the loss, the
# gradients) live outside the arena. `program.memory.text()` is `04_memory.txt`:

# %%
plan = program.memory
verify(plan)                    # proves: no two buffers live at the same step overlap
print(plan.text())

# %% [markdown]
# In the picture each buffer is a box: as wide as the steps it is live, as tall as its bytes,
# at its offset. What you should see: the long boxes at the bottom (`t3`, `t5`, `t6`) live from
# the first kernels to the last — they are saved by the forward and read by the backward at
# the end; short boxes (`t4`, `t11`) live one or two steps, and later buffers (`t19`, `t57`,
# `t64`) take over their memory. The dotted line is the peak step, where
# the most bytes are live at once: the dashed lower bound. Here the greedy placement reaches
# it exactly — the arena *is* the lower bound — and no reuse would need about 2.6 times the
# arena.

# %%
tut.show_file(pictures["memory"])
print(f"arena {plan.arena_bytes} B, lower bound {plan.live_lower_bound_bytes} B at step {plan.peak_step}, "
      f"no reuse {plan.no_reuse_bytes} B")
assert plan.arena_bytes == plan.live_lower_bound_bytes and plan.peak_step == 3
assert 2.4 < plan.no_reuse_bytes / plan.arena_bytes < 2.8
long_lived = {r.name for r in plan.rows if r.first <= 1 and r.last >= 13}
assert {"t3", "t5", "t6"} <= long_lived and plan.row("t4").last == 1 and plan.row("t11").last == 3


def shares_memory(a, b):
    a, b = plan.row(a), plan.row(b)
    return a.offset < b.offset + b.bytes and b.offset < a.offset + a.bytes


assert shares_memory("t11", "t19") and shares_memory("t4", "t57") and shares_memory("t4", "t64")

# %% [markdown]
# ## Saved activations
#
# Why do `t3`, `t5` and `t6` live so long? `compiler/saved.py` answers: for every value the
# backward reads from the forward, its size, its line in your code, and which backward node
# reads it and for what (like JAX's `print_saved_residuals`). This is `05_saved.txt`:

# %%
print(saved_report(program.graph))

# %% [markdown]
# Read the reasons: ReLU keeps its mask (`bool`, one byte per element) for its backward
# `where`; max pooling keeps the *offset* of each window's maximum (`i64`, eight bytes per
# element) so its backward can send the gradient to that cell; a convolution or a linear
# layer keeps its *input*, because the weight's gradient is input-transposed times output
# gradient; cross-entropy keeps its `exp`, its row sums and the one-hot labels (`t25`, `t26`,
# `t32`), and the mean's count of labels (`t38`). The inputs the backward reads (weights, the images) are listed apart: they are
# kept anyway. The chart colours each saved value by its dtype. What you should see: the
# int64 pooling offsets (red) are the largest part, more than all the float32 values — yet an
# offset inside a 2×2 window is 0, 1, 2 or 3, and one byte would hold it.

# %%
saved = [v for v in saved_values(program.graph) if not v.is_input]   # a view counts as its buffer
total_saved = saved_bytes(program.graph)
assert sum(v.bytes for v in saved) == total_saved
fig, ax = plt.subplots(figsize=(8, 3.2))
dtype_colours = {"bool": "tab:gray", "i64": "tab:red", "f32": "tab:blue"}
ax.barh(range(len(saved)), [v.bytes for v in saved],
        color=[dtype_colours[v.type.split("[")[0]] for v in saved])
ax.set_yticks(range(len(saved)), [f"{v.name} {v.type}" + (f" (a view of {v.base_name})" if v.is_view else "")
                                  for v in saved], fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("bytes kept from the forward to the backward")
ax.set_title(f"saved values: {total_saved} B (red: int64 pooling offsets, grey: bool masks, blue: float32)")
tut.show(fig, "saved")
by_dtype = {d: sum(v.bytes for v in saved if v.type.startswith(d)) for d in dtype_colours}
print({d: f"{b} B ({b / total_saved:.0%})" for d, b in by_dtype.items()})
assert by_dtype["i64"] > by_dtype["f32"] > by_dtype["bool"]

# %% [markdown]
# ## Rematerialization
#
# Some saved values are cheaper to compute again than to keep. `C.compile(..., remat=True)`
# runs `compiler/remat.py` after simplify: it recomputes cheap pointwise values (never a GEMM,
# a reduction, pooling or random numbers) in the backward when that lowers the bytes the
# backward keeps alive. Its log says what it chose:

# %%
from compiler.remat import rematerialize  # noqa: E402

remat_log = []
rematerialize(program.graph, log=remat_log)
for recomputed, before, after in remat_log:
    print(f"recompute {', '.join(recomputed)}: forward values + inputs kept for the backward {before} -> {after} B")

remat_program = C.compile(cnn_loss, *specs, grad_argnums=PARAMS, backend="interpret", remat=True)
remat_report = remat_program.report()
print(saved_report(remat_program.graph, before=remat_program.before_remat).splitlines()[-1])
remat_loss, remat_grads = remat_program(*params, x, y)
assert all(np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(remat_grads, grads))

# %% [markdown]
# It recomputes the ReLU after the first dense layer (its mask `t18` and output `t19`, from
# the pre-activation `t17`) and the one-hot matrix of the labels (`t30`–`t32`, from `y`), and
# the saved bytes go down. Now measure what that bought — same gradients (checked above), but:

# %%
compare = ["kernels", "saved_bytes", "arena_bytes", "dram_bytes"]
print(f"{'':12s} {'without':>8s} {'remat':>8s}")
for key in compare:
    print(f"{key:12s} {report[key]:>8} {remat_report[key]:>8}")
recompute_kernel = next(line for line in remat_program.compiled.fusion.text(remat_program.schedule).splitlines()
                        if line.startswith("kernel") and "[matmul add le where le where]" in line)
print("\nthe kernel that computes the recomputed copies:\n" + recompute_kernel)
assert [recomputed for recomputed, _, _ in remat_log] == [["t18", "t19"], ["t30", "t31", "t32"]]
copies_kernel = next(g for g in remat_program.compiled.fusion.groups if len(g) == 6 and g[0].op == "matmul")
assert [n.role for n in copies_kernel[4:]] == ["backward", "backward"]
assert all(n.role == "forward" for n in copies_kernel[:4])
assert remat_report["saved_bytes"] < report["saved_bytes"]
assert remat_report["arena_bytes"] == report["arena_bytes"]
assert remat_report["dram_bytes"] - report["dram_bytes"] == 16 * 84 * 4

# %% [markdown]
# The saved bytes went down, but the arena did not move and the traffic went *up* by exactly
# one `f32[16,84]` buffer (5376 bytes). Two reasons, both visible above:
#
# 1. **The peak is elsewhere.** The arena is set by the step with the most bytes live — step
#    3, in the forward, around the convolutions. The values remat freed belong to the dense
#    layers and the loss; they never were part of that peak.
# 2. **Fusion undid the recompute.** The copies (`le`, `where` with role *backward*) read
#    `t17`, which the first dense layer's kernel computes; fusion merged them into that
#    forward kernel — `[matmul add le where le where]` — so they are computed in the forward
#    and *stored* (the copy of the ReLU output right next to the original, which the logits
#    need), instead of recomputed in the backward.
#
# Rematerialization is a trade, and it pays only where the freed memory is part of the peak
# and the recomputation runs where it is needed. The compiler can tell you — these four
# numbers are the whole argument.

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** The lower bound is the most bytes live at one step. Compute it yourself from
# the rows of the memory plan (`plan.rows`: each has `.bytes`, `.first`, `.last`) at the peak
# step `plan.peak_step`.

# %%
answer_1 = sum(r.bytes for r in plan.rows if r.first <= plan.peak_step <= r.last)   # your answer here
tut.check(1, "bytes live at the peak step", got=answer_1, want=plan.live_lower_bound_bytes)

# %% [markdown]
# **Exercise 2.** Kernel `k00_fwd_conv2d_relu` fuses `conv2d`, `add`, `le` and `where`. Without
# fusion they are four kernels. Count by hand the bytes those four move: the conv reads `x`
# (16·1·8·8 floats) and `c1` (6·1·3·3 floats) and writes a `f32[16,6,8,8]`; the add reads it
# and `cb1` (6 floats) and writes another; `le` reads that and writes a `bool[16,6,8,8]`;
# `where` reads both and writes a third `f32[16,6,8,8]`. How many bytes does fusion save on
# them? (4 bytes per float, 1 per bool.) The check adds up the unfused kernels' own counts.

# %%
f32, mask = 16 * 6 * 8 * 8 * 4, 16 * 6 * 8 * 8
unfused_by_hand = ((16 * 64 + 54) * 4 + f32) + (f32 + 6 * 4 + f32) + (f32 + mask) + (mask + f32 + f32)
fused_by_hand = (16 * 64 + 54 + 6) * 4 + mask + f32          # reads x, c1, cb1; writes the mask and the relu
answer_2 = unfused_by_hand - fused_by_hand                                            # your answer here
conv_nodes = set(program.schedule.kernels[0].nodes)
four = [k for k in unfused.kernels if set(k.nodes) <= conv_nodes]
assert [k.nodes[0].op for k in four] == ["conv2d", "add", "le", "where"]
saved_by_fusion = sum(sum(cost.kernel_bytes(k)) for k in four) - sum(cost.kernel_bytes(program.schedule.kernels[0]))
tut.check(2, "bytes fusion saves on conv2d + bias + relu", got=answer_2, want=saved_by_fusion,
          hint="the fused kernel reads x, c1, cb1 and writes the mask and the relu output")

# %% [markdown]
# **Exercise 3.** Every saved value of this step but one has the batch as its first dimension;
# the exception is cross_entropy's count of the labels that are not `ignore_index` (a float32
# scalar, 4 bytes), which its mean divides by. Predict the saved bytes at batch 32. The check compiles the step for batch 32 (with the NumPy
# reference backend: tracing, autodiff and simplify are all it needs) and counts.

# %%
answer_3 = 2 * (total_saved - 4) + 4                                               # your answer here
specs_32 = [O.spec(p.shape) for p in params] + [O.spec((32, 1, 8, 8)), O.spec((32,), "int64")]
step_32 = C.compile(cnn_loss, *specs_32, grad_argnums=PARAMS, backend="reference")
tut.check(3, "saved bytes at batch 32", got=answer_3, want=saved_bytes(step_32.graph))

# %%
tut.done()
