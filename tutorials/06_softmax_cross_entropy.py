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
# # 6. Softmax and cross-entropy
#
# Every classifier in these tutorials ends the same way: the last layer gives one score (a
# *logit*) per class, softmax turns the scores into probabilities, and cross-entropy charges
# −log of the probability given to the right class. It is the most common loss there is, and
# three things about it are worth seeing once:
#
# * written naively it **overflows** (or underflows) in float32 on perfectly ordinary scores,
#   and the cure is one subtraction;
# * its gradient with respect to the logits is simply **p − onehot(y)** — the chain rule
#   derives it from the pieces, and we check it number by number;
# * the compiler turns the whole loss — and its gradient — into **one fused row kernel**.
#
# Run it as a script (`python tutorials/06_softmax_cross_entropy.py`) or open it as a notebook.
# Pictures go to `tutorials/out/06_softmax_cross_entropy/`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from runtime.tutorial import Tutorial

tut = Tutorial("06_softmax_cross_entropy")

# %% [markdown]
# ## The definitions
#
# For one example with logits z₁ … z_C and true class y:
#
#     p_i = exp(z_i) / Σ_j exp(z_j)                       (softmax: positive, sums to 1)
#     loss = −log p_y = −z_y + log Σ_j exp(z_j)            (cross-entropy)
#
# and a batch takes the mean over its N examples. A batch of 8 examples with 5 classes, the
# loss in NumPy (float64) next to `O.cross_entropy` compiled to a Triton kernel (float32):

# %%
rng = np.random.default_rng(0)
batch, classes = 8, 5
logits = rng.standard_normal((batch, classes)).astype(np.float32)
labels = rng.integers(0, classes, batch)


def softmax_np(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


probabilities = softmax_np(logits.astype(np.float64))
loss_np = -np.mean(np.log(probabilities[np.arange(batch), labels]))


def loss_fn(logits, labels):
    return O.cross_entropy(logits, labels)


forward_program = C.compile(loss_fn, O.spec((batch, classes)), O.spec((batch,), "int64"), backend="interpret")
loss_compiled = float(forward_program(logits, labels))
print(f"NumPy (float64): {loss_np:.7f}   compiled kernel (float32): {loss_compiled:.7f}")
assert abs(loss_compiled - loss_np) < 1e-6 * abs(loss_np)

# %% [markdown]
# ## The naive form overflows
#
# Take the definition literally: exponentiate, divide by the sum. float32 can hold numbers up to
# about 3.4·10³⁸, so exp(z) is `inf` once z > ln(3.4·10³⁸) ≈ 88.7, and it rounds to 0 once
# z < −103 or so. Three rows with the same *differences* between their logits, so the same
# softmax — the second shifted up by 1000, the third down by 1000:

# %%
def naive_softmax(z):
    e = O.exp(z)
    return e / O.sum(e, dim=1, keepdim=True)


def stable_softmax(z):
    return O.softmax(z, dim=1)


shifted_rows = np.array([[1.0, 2.0, 3.0], [1001.0, 1002.0, 1003.0], [-999.0, -998.0, -997.0]], np.float32)
naive_result = C.jit(naive_softmax, backend="interpret")(shifted_rows)
stable_result = C.jit(stable_softmax, backend="interpret")(shifted_rows)
print("naive:\n", naive_result)
print("stable (O.softmax):\n", stable_result)
assert np.isnan(naive_result[1:]).all() and np.allclose(stable_result, stable_result[0], rtol=1e-6)

# %% [markdown]
# **What you should see:** the naive form gets the first row right and gives `nan` for the other
# two: exp(1003) overflows to `inf`, and inf / inf is nan; exp(−997) underflows to 0, and
# 0 / 0 is nan. `O.softmax` gives the same, right answer for all three rows.
#
# The cure: softmax does not change when every logit of a row moves by the same amount c,
# because exp(z_i − c) / Σ exp(z_j − c) = exp(z_i) / Σ exp(z_j). Choose c = max_j z_j. Then the
# largest exponent is exp(0) = 1 — nothing can overflow — and the sum is at least 1 — no
# division by 0. For the loss, never form p_y and then take its log; write log p_y directly
# (the log-sum-exp form):
#
#     log p_y = (z_y − m) − log Σ_j exp(z_j − m),   m = max_j z_j
#
# so −log p_y never sees a probability that has underflowed to 0.
#
# How far does each form get? Two classes, the right one behind by a gap g, so that the true
# loss is log(1 + e^g) ≈ g. The same gap written two ways: logits (0, g) — large positive — and
# (−g, 0) — large negative:

# %%
def naive_cross_entropy(z, y):
    return -O.sum(O.log(naive_softmax(z)) * O.one_hot(y, z.shape[1]), dim=1)


def stable_cross_entropy(z, y):
    return O.cross_entropy(z, y, reduction="none")


gaps = np.arange(0.0, 120.5, 0.5, dtype=np.float32)
right_class = np.zeros(len(gaps), np.int64)
written_up = np.stack([np.zeros_like(gaps), gaps], axis=1)        # logits (0, g)
written_down = np.stack([-gaps, np.zeros_like(gaps)], axis=1)     # logits (-g, 0)
naive_ce = C.jit(naive_cross_entropy, backend="interpret")
stable_ce = C.jit(stable_cross_entropy, backend="interpret")
curves = {"naive, logits (0, g)": naive_ce(written_up, right_class),
          "naive, logits (−g, 0)": naive_ce(written_down, right_class),
          "stable, either way": stable_ce(written_up, right_class)}
assert np.allclose(stable_ce(written_down, right_class), curves["stable, either way"])
true_loss = np.logaddexp(0.0, gaps.astype(np.float64))
for name, values in curves.items():
    broken = ~np.isfinite(values)
    first = f"first non-finite at g = {gaps[broken][0]} ({values[broken][0]})" if broken.any() else "finite everywhere"
    print(f"{name:24} {first};  largest error where finite: {np.abs(values - true_loss)[~broken].max():.2g}")
assert 0.2 < np.abs(curves["naive, logits (−g, 0)"] - true_loss)[gaps < 104].max() < 0.3

fig, ax = plt.subplots(figsize=(7, 4))
styles = {"naive, logits (0, g)": ("tab:red", 6), "naive, logits (−g, 0)": ("tab:orange", 4),
          "stable, either way": ("tab:green", 2)}
for name, values in curves.items():
    colour, width = styles[name]
    ax.plot(gaps, np.where(np.isfinite(values), values, np.nan), color=colour, linewidth=width, label=name)
for x, text in ((np.log(np.finfo(np.float32).max), "exp(g) overflows: g ≈ 88.7"),
                (-np.log(np.finfo(np.float32).smallest_subnormal), "exp(−g) underflows: g ≈ 103.3")):
    ax.axvline(x, color="0.5", linestyle=":")
    ax.text(x + 1, 2, text, rotation=90, ha="left", va="bottom", fontsize=8, color="0.3")
ax.set_xlabel("gap g between the wrong and the right class's logit")
ax.set_ylabel("cross-entropy (float32)")
ax.set_title("the same loss, computed three ways")
ax.legend(loc="upper left")
tut.show(fig, "overflow")

# %% [markdown]
# **What you should see:** all three lines lie on top of each other (the loss is g, give or take
# log 2), until the red one — naive, logits (0, g) — stops at g = 89: exp(g) overflowed and the
# loss is `nan`. The orange one — naive, logits (−g, 0) — goes on a little further and stops at
# g = 104: there p_y = exp(−g) / (1 + exp(−g)) has underflowed to 0, and −log 0 = `inf` (just
# before, where p_y is a *subnormal* float with few significant bits, it is already off by
# almost 0.3: the "largest error" printed above the picture). The green one, the stable form,
# is right everywhere, whichever way the logits are written. Logits in the hundreds are not
# exotic — a too large learning rate or badly scaled inputs produce them — and one `nan` in a
# batch turns every weight into `nan` at the next update.
#
# ## The stable form, as chainrule traces it
#
# `O.cross_entropy` is written with primitives in `ops/functional.py` (`log_softmax`, then
# picking the right class with a one-hot mask). Its trace:

# %%
forward_graph = C.trace(loss_fn, O.spec((batch, classes)), O.spec((batch,), "int64"))
print(forward_graph)
traced_ops = [n.op for n in forward_graph.nodes if n.op != "input"]
assert traced_ops[:7] == ["reduce_max", "detach", "sub", "exp", "reduce_sum", "log", "sub"]
tut.show(forward_graph, "cross_entropy_forward")

# %% [markdown]
# **What you should see:** the stable recipe, line by line — `reduce_max` (m), `detach`, `sub`
# (z − m), `exp`, `reduce_sum`, `log`, `sub` (log p = z − m − log Σ exp(z − m)); then the label
# becomes a one-hot row (`iota` counts 0 … 4 along the row, `eq` compares with the label,
# `cast` makes it 0.0 / 1.0), `mul` and `reduce_sum` pick log p_y, `neg`, and the mean over the
# batch: the losses summed (`reduce_sum`) and divided (`div`) by the number of labels that count,
# the one-hot rows summed (`reduce_sum` twice). A label equal to `ignore_index` (-100 by default,
# as in torch) matches no class: its one-hot row is all zeros, so it counts in neither sum.
#
# Why `detach`? It tells autodiff to treat m as a constant. That is not an approximation: the
# loss does not change when m changes (that was the whole point of the shift), so its gradient
# through m is exactly zero, and `detach` saves computing it.
#
# ## One fused kernel
#
# After simplification (which drops the `detach`) the program has 17 nodes; without fusion,
# each but the `reshape` of the labels (a view, which costs nothing) would be a kernel — 16
# kernels, each writing its result to memory for the next one to read back. The fusion pass
# sees that the reductions run along the rows (over the classes), and that the last one, the
# batch mean, needs just one value per row. So the whole thing becomes one *row kernel*: a
# program loads a block of whole rows once and does everything in registers.

# %%
report = forward_program.report()
(kernel_bytes,) = report["kernel_bytes"]
print(f"kernels: {report['kernels']}   (one per primitive: {report['unfused_kernels']}); "
      f"it reads {kernel_bytes['bytes_read']} bytes and writes {kernel_bytes['bytes_written']}")
assert report["kernels"] == 1 and report["unfused_kernels"] == 16 and forward_program.graph.num_ops == 17
assert kernel_bytes["bytes_read"] == logits.nbytes + labels.nbytes and kernel_bytes["bytes_written"] == 4
(forward_kernel_file, forward_kernel), = forward_program.compiled.files()
print(f"---- kernels/{forward_kernel_file} ----")
tut.show_code(forward_kernel, start="@triton.jit")
assert "BLOCK_ROWS=8, BLOCK_COLS=8" in forward_kernel and "detach" not in str(forward_program.graph)

# %% [markdown]
# **What you should see:** one `@triton.jit` function, `k00_fwd_cross_entropy`. Each program takes
# `BLOCK_ROWS` rows; a row has 5 logits, but a block's sides must be powers of two, so it loads 8
# columns and `mask` switches off the 3 extra ones (`other=0` on the load, `float('-inf')` under
# the max, `0` under the sums). Then the lines of the trace, each commented with the node it
# computes: `t0` the row max, `t1 = logits - t0`, `tl.exp`, the row sum `t3`, `tl.log`, … down
# to `t14` and `t15`, the sums over the rows *inside the same program* (`axis=0`) of the losses
# and of the labels that count, their quotient `t16`, and one `tl.store` of the loss. (`t6` is the labels, read as a column `(8, 1)`: the kernel's names are those of the
# simplified program, where the `detach` is gone, so they are one lower than in the trace.)
# `launch` picks `BLOCK_ROWS=8`: all eight rows in one program, so the batch mean needs no
# second kernel. The kernel reads the logits and the labels once (160 + 64 bytes) and writes
# 4 bytes, the loss.
#
# ## Why the gradient is p − onehot(y)
#
# Differentiate one example's loss, −z_y + log Σ_j exp(z_j), with respect to z_i:
#
#     ∂/∂z_i (−z_y) = −1 if i = y, else 0                 = −onehot(y)_i
#     ∂/∂z_i log Σ_j exp(z_j) = exp(z_i) / Σ_j exp(z_j)   = p_i
#
# so ∂loss/∂z = p − onehot(y), and the batch mean divides it by N. Intuitively: push every
# class's score down in proportion to the probability it got, and the right class's up by 1. The
# gradient of a row sums to zero, and it is small when p is already close to the one-hot target.
#
# chainrule knows nothing of this formula: it differentiates the primitives one by one. Compile
# the loss *with* its gradient and compare with the formula, in NumPy, in float64:

# %%
grad_program = C.compile(loss_fn, O.spec((batch, classes)), O.spec((batch,), "int64"), grad_argnums=(0,),
                         backend="interpret")
loss_value, (grad_compiled,) = grad_program(logits, labels)
onehot = np.eye(classes)[labels]
grad_formula = (probabilities - onehot) / batch
error = np.abs(grad_compiled - grad_formula).max() / np.abs(grad_formula).max()
print("compiled gradient (float32):\n", np.round(grad_compiled, 5))
print(f"largest difference from (p - onehot(y)) / N, relative: {error:.1e}")
print("row sums of the compiled gradient:", np.round(grad_compiled.sum(axis=1), 8))
assert error < 1e-6

# %% [markdown]
# And a check that assumes neither: central finite differences, (loss(z + h·e_k) −
# loss(z − h·e_k)) / 2h for each of the 40 logits, on the float64 reference backend:

# %%
loss_float64 = C.jit(loss_fn, backend="reference")
z64, h = logits.astype(np.float64), 1e-6
finite_differences = np.zeros_like(z64)
for k in np.ndindex(z64.shape):
    step = np.zeros_like(z64)
    step[k] = h
    finite_differences[k] = (loss_float64(z64 + step, labels) - loss_float64(z64 - step, labels)) / (2 * h)
fd_error = np.abs(finite_differences - grad_formula).max() / np.abs(grad_formula).max()
print(f"finite differences vs (p - onehot(y)) / N, relative: {fd_error:.1e}")
assert fd_error < 1e-6

# %% [markdown]
# ### How the chain rule gets there
#
# The backward graph (the forward faded; the backward orange; dashed edges bring values the
# forward saved):

# %%
tut.show(grad_program.graph, "cross_entropy_backward")

# %% [markdown]
# **What you should see:** from the dotted seed edge, `div` — 1/N, N the count of labels the
# forward summed (8 here) — `expand`ed over the batch and negated by the `neg` of the loss: the
# mean's gradient, −1/N for every entry. It meets the saved one-hot row (`cast`) in a `mul`:
# that is **−onehot(y)/N**, and it goes straight down the left into the final `add`.
# The other branch is log Σ exp's gradient: `neg`, `reduce_sum` over the row (the row of
# onehot/N sums to 1/N), `div` by the saved Σ exp, `expand` along the row, `mul` by the saved
# `exp`: exp(z − m) / Σ exp(z − m) / N = **p/N**. The final `add` is ∂loss/∂logits = (p −
# onehot(y)) / N. The compiler did not recognise the formula; it got there by multiplying local
# derivatives — and it even sums the one-hot row at run time, because it cannot know that a
# label is always a valid class (so the row always sums to 1).
#
# Fused, forward and backward are still **one kernel**: the backward reduces over the same rows,
# so its lines join the forward's. The kernels picture draws the joint graph with each kernel
# as a cluster, and the backward's lines in the kernel follow the graph above:

# %%
grad_report = grad_program.report()
print(f"kernels: {grad_report['kernels']}   (one per primitive: {grad_report['unfused_kernels']})")
assert grad_report["kernels"] == 1 and grad_report["kernel_bytes"][0]["bytes_read"] == 224
assert grad_report["kernel_bytes"][0]["bytes_written"] == 4 + logits.nbytes
pictures = grad_program.render(tut.path("compiled"))
tut.show_file(tut.picture(pictures, "kernels"))
(grad_kernel_file, grad_kernel), = grad_program.compiled.files()
body = grad_kernel[grad_kernel.index("@triton.jit"):]
print(f"---- kernels/{grad_kernel_file}, the backward's lines ----")
shown = tut.show_code(body, start="t17 = ", end="t29 = ")
assert "t17 = 1.0 / t15" in shown and "t22 = t19 * t9" in shown and "t29 = t22 + t28" in shown

# %% [markdown]
# **What you should see:** one cluster, `k00_fwd_bwd_cross_entropy`, holding the forward (blue) and the
# backward (orange) nodes; it reads the logits (`primals_1`) and the labels (`primals_2`), 224
# bytes, and writes the loss and the gradient, 164 bytes. The labels' reshape to a column sits
# outside the cluster as a note: it is a view, it costs no kernel. In the code, `t17 = 1.0 / t15`
# is 1/N (`t15` the forward's count of labels), `t22 = t19 * t9` is −onehot/N (`t9` is the
# one-hot row the forward made), `t24` the row sum, `t26 = t24 / t3` divides by the forward's
# Σ exp (`t3`, still in registers — nothing was saved to memory), `t28 = t26 * t2` multiplies
# by the forward's exp, and `t29 = t22 + t28` is the gradient that is stored.
#
# ## Exercises
#
# Each exercise has a reference answer filled in; change it to your own and rerun the cell —
# the check tells you whether it is right.
#
# **Exercise 1.** One example (N = 1) with logits (2.0, 1.0, 0.1) and true class 0. Give the
# gradient of its cross-entropy with respect to the three logits. (The check compiles
# `O.cross_entropy` and differentiates it.)

# %%
example = np.array([[2.0, 1.0, 0.1]], np.float32)
answer_1 = softmax_np(example.astype(np.float64))[0] - np.array([1.0, 0.0, 0.0])     # your answer here
(_, (grad_example,)) = C.value_and_grad(loss_fn, argnums=(0,), backend="interpret")(example, np.array([0]))
tut.check(1, "∂loss/∂z for z = (2, 1, 0.1), y = 0", got=answer_1, want=grad_example[0], tol=1e-5,
          hint="p − onehot(y): softmax the logits, subtract 1 at the true class")

# %% [markdown]
# **Exercise 2.** What is the largest logit x for which the naive softmax of the row (x, 0) is
# still finite in float32? Give it to two decimals or better; the check runs the naive kernel
# just below and just above your answer.

# %%
answer_2 = float(np.log(np.finfo(np.float32).max))                 # your answer here
naive = C.jit(naive_softmax, backend="interpret")
below = naive(np.array([[answer_2 - 0.01, 0.0]], np.float32))
above = naive(np.array([[answer_2 + 0.01, 0.0]], np.float32))
tut.check(2, "finite just below your x, nan just above", got=bool(np.isfinite(below).all() and np.isnan(above).any()),
          hint="exp(x) overflows when x exceeds the log of float32's largest number")

# %% [markdown]
# **Exercise 3.** *Label smoothing* (`O.cross_entropy(..., label_smoothing=ε)`) trains
# against the target (1 − ε)·onehot(y) + ε/C instead of the one-hot row. By the same argument as
# above, the gradient is p minus the target, over N. Give the gradient for our batch of 8 with
# ε = 0.1; the check compiles the smoothed loss.

# %%
epsilon = 0.1
answer_3 = (probabilities - ((1 - epsilon) * onehot + epsilon / classes)) / batch       # your answer here
(_, (grad_smoothed,)) = C.value_and_grad(lambda z, y: O.cross_entropy(z, y, label_smoothing=epsilon),
                                         argnums=(0,), backend="interpret")(logits, labels)
tut.check(3, "the gradient with label smoothing 0.1", got=answer_3, want=grad_smoothed, tol=1e-6,
          hint="p − ((1 − ε)·onehot(y) + ε/C), divided by N")

# %%
tut.done()
