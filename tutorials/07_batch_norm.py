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
# # 7. Batch normalization
#
# Batch normalization rescales every channel of a layer's output to mean 0 and variance 1,
# using the statistics of the current batch, then lets the network choose a scale γ and a shift
# β of its own. It makes deep networks much easier to train — and it is the first layer in these
# tutorials whose output for one example depends on the *other* examples of the batch. That has
# three consequences you will see here:
#
# * the backward pass runs through the batch's mean and variance: we derive it by hand and
#   compare it with the gradient chainrule derives;
# * the compiler fuses the per-channel sums and the normalization into *row kernels*, where a
#   "row" is a whole channel across the batch;
# * at test time there is no batch to take statistics from, so the layer keeps running averages
#   during training and switches to them in evaluation mode.
#
# Run it as a script (`python tutorials/07_batch_norm.py`) or open it as a notebook. Pictures go
# to `tutorials/out/07_batch_norm/`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from ops.printer import value_names
from ops import layers as L
from ops.evaluate import run_graph_values
from runtime.tutorial import Tutorial

tut = Tutorial("07_batch_norm")

# %% [markdown]
# ## The forward
#
# For an input x of shape [N, C, H, W], each channel c is normalized over its m = N·H·W values
# (every example, every pixel):
#
#     μ = (1/m) Σ x                   the channel's mean
#     σ² = (1/m) Σ (x − μ)²           its (biased) variance
#     x̂ = (x − μ) / √(σ² + ε)        mean 0, variance 1 (ε = 1e-5 keeps the division safe)
#     y = γ · x̂ + β                   a scale and a shift per channel, learned
#
# We differentiate a loss that makes the upstream gradient anything we like: loss = Σ y ·
# `upstream`, so that ∂loss/∂y = `upstream`.

# %%
batch, channels, height, width = 8, 3, 4, 4
shape = (batch, channels, height, width)
m = batch * height * width
true_mean, true_std = np.array([1.0, -3.0, 0.0]), np.array([2.0, 0.5, 1.0])      # per channel
rng = np.random.default_rng(0)
x = rng.standard_normal(shape) * true_std.reshape(1, -1, 1, 1) + true_mean.reshape(1, -1, 1, 1)
gamma = rng.uniform(0.5, 1.5, channels)
beta = rng.uniform(-0.5, 0.5, channels)
upstream = rng.standard_normal(shape)
eps = 1e-5


def bn_loss(x, gamma, beta, upstream):
    y = O.batch_norm(x, None, None, gamma, beta, training=True)
    return O.sum(y * upstream)


specs = [O.spec(shape), O.spec((channels,)), O.spec((channels,)), O.spec(shape)]
forward_graph = C.trace(bn_loss, *specs)
tut.show(forward_graph, "batch_norm_forward")

# %% [markdown]
# **What you should see:** inside the dashed `batch_norm` cluster, four arrows leave x. On the
# right, `reduce_sum` + `div (128.0)` make the mean μ — over dims (0, 2, 3), so one number per
# channel, shape [1,3,1,1] — and the `sub` under them is x − μ. On the left is the variance:
# batch norm calls `var(x)`, which takes its own mean (the `reduce_sum` + `div` at the top: the
# mean appears twice, and the simplifier merges the two copies later), subtracts it (`sub`),
# squares (`mul`), sums and divides: σ². Then `add (0.00001)`, `sqrt`, the `div` that makes
# x̂ = (x − μ)/σ̂, and γ and β, reshaped to [1,3,1,1] so that they broadcast over a channel, in
# the `mul` and the `add`.
#
# ## The backward, by hand
#
# Write g = ∂loss/∂y (here: `upstream`) and sums Σ over a channel's m values. γ and β are easy:
#
#     ∂loss/∂β = Σ g            ∂loss/∂γ = Σ g · x̂            ∂loss/∂x̂ = γ · g  =: d
#
# x is harder, because it reaches x̂ by **three paths**: directly in x − μ, through the mean μ,
# and through the variance σ². The chain rule adds the three contributions:
#
#     ∂loss/∂σ² = Σ d · (x − μ) · (−½) (σ² + ε)^(−3/2)
#     ∂loss/∂μ  = Σ d · (−1/√(σ²+ε))  +  ∂loss/∂σ² · (−2/m) Σ (x − μ)     ← the last sum is 0
#     ∂loss/∂x  = d / √(σ²+ε)  +  ∂loss/∂σ² · 2 (x − μ) / m  +  ∂loss/∂μ / m
#
# Put together (write σ̂ = √(σ² + ε) and use x − μ = σ̂ x̂), it collapses to one line with just
# two sums per channel:
#
#     ∂loss/∂x = (1 / (m σ̂)) · (m·d − Σ d − x̂ · Σ d x̂)
#
# Read it: the gradient that reaches x is d, minus its mean over the channel, minus its
# component along x̂, scaled by 1/σ̂. Normalization removes the mean and the scale of x, so the
# gradient can have no component that would change either.

# %%
def batch_norm_backward(x, gamma, g, eps):
    """(dx, dgamma, dbeta) by the three-path formulas above, in NumPy."""
    dims, per_channel = (0, 2, 3), (1, -1, 1, 1)
    mu = x.mean(axis=dims, keepdims=True)
    var = x.var(axis=dims, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    d = g * gamma.reshape(per_channel)
    dvar = np.sum(d * (x - mu), axis=dims, keepdims=True) * -0.5 * (var + eps) ** -1.5
    dmu = np.sum(-d / np.sqrt(var + eps), axis=dims, keepdims=True) \
        + dvar * (-2.0 / m) * np.sum(x - mu, axis=dims, keepdims=True)
    dx = d / np.sqrt(var + eps) + dvar * 2.0 * (x - mu) / m + dmu / m
    return dx, np.sum(g * x_hat, axis=dims), np.sum(g, axis=dims)


def batch_norm_backward_compact(x, gamma, g, eps):
    dims, per_channel = (0, 2, 3), (1, -1, 1, 1)
    sigma = np.sqrt(x.var(axis=dims, keepdims=True) + eps)
    x_hat = (x - x.mean(axis=dims, keepdims=True)) / sigma
    d = g * gamma.reshape(per_channel)
    return (m * d - d.sum(axis=dims, keepdims=True) - x_hat * (d * x_hat).sum(axis=dims, keepdims=True)) / (m * sigma)


dx_hand, dgamma_hand, dbeta_hand = batch_norm_backward(x, gamma, upstream, eps)
print("three paths vs the one-line form, largest difference:",
      np.abs(dx_hand - batch_norm_backward_compact(x, gamma, upstream, eps)).max())

# %% [markdown]
# Now chainrule's gradient — derived from the primitives, with no idea of the formulas above —
# in float64 on the NumPy reference backend, and in float32 through the generated Triton kernels:

# %%
def relative(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


arrays64 = [x, gamma, beta, upstream]
arrays32 = [a.astype(np.float32) for a in arrays64]
for backend, arrays in (("reference", arrays64), ("interpret", arrays32)):
    _, (dx, dgamma, dbeta) = C.value_and_grad(bn_loss, argnums=(0, 1, 2), backend=backend)(*arrays)
    errors = relative(dx, dx_hand), relative(dgamma, dgamma_hand), relative(dbeta, dbeta_hand)
    print(f"{backend:9} ({dx.dtype}): relative error of dx {errors[0]:.1e}, dγ {errors[1]:.1e}, dβ {errors[2]:.1e}")
    assert max(errors) < (1e-12 if backend == "reference" else 1e-5)

# %% [markdown]
# **What you should see:** agreement to about 1e-15 in float64 (rounding only) and about 1e-7
# in float32.
#
# ## The backward, as chainrule derives it
#
# The joint graph after simplification — the program that actually runs. The forward is faded,
# the backward orange; dashed edges bring the values the forward saved (x − μ, σ̂, x̂, γ and
# `upstream`):

# %%
program = C.compile(bn_loss, *[O.spec(a.shape, "float64") for a in arrays64], grad_argnums=(0, 1, 2),
                    backend="reference")
joint = program.graph
tut.show(joint, "batch_norm_backward")
upstream_node = joint.inputs[3]
assert any(n.op == "reduce_sum" and n.inputs == (upstream_node,) for n in joint.nodes), \
    "∂loss/∂β is no longer a sum of `upstream` itself: the picture's description below needs an update"
from compiler.render import seed_takers  # noqa: E402  (where the picture draws the seed)

assert sorted(n.op for n in seed_takers(joint)) == ["mul", "mul", "reduce_sum"] and \
    all(upstream_node in n.inputs for n in seed_takers(joint))

# %% [markdown]
# **What you should see:** ∂loss/∂y is `upstream` itself (the seed 1, times the sum's gradient
# 1, times `upstream`: the simplifier drops multiplications by 1), so the dotted seed edges
# leave the loss and enter the three nodes that read `upstream` directly; the backward never
# reads the loss's value. The dashed edges from `upstream` go to ∂loss/∂β (a `reduce_sum`), to a `mul` by x̂ whose `reduce_sum` is
# ∂loss/∂γ, and to a `mul` by γ — that is d. From d, four orange paths run down to ∂loss/∂x,
# joined by Σ nodes:
#
# * the **direct path**, d ÷ σ̂: a `div` whose long edge runs straight down into a Σ;
# * the **mean path**, from that `div`: `neg`, `reduce_sum`, `reshape`, `div (128.0)`, `expand` —
#   Σ(−d/σ̂) / m, spread back over the channel — into the final `add`, ∂loss/∂x;
# * the **variance path**, from d: `neg`, `mul` by x̂, `div` by σ̂ (that is ∂loss/∂σ̂ before the
#   sum), `reduce_sum`, `reshape`, `mul (0.5)` and `div` by σ̂ (the square root's derivative,
#   1/(2σ̂)): ∂loss/∂σ². Then `div (128.0)`, `expand`, a `mul` by the saved x − μ, and a Σ that
#   adds the product to itself — the 2 of ∂(x − μ)²/∂x;
# * the **variance's own mean** (the μ inside var(x)): `neg`, `reduce_sum`, `reshape`,
#   `div (128.0)`, `expand` after that Σ. This is the term the hand derivation dropped, because
#   Σ (x − μ) = 0.
#
# The compiler knows no algebra beyond simple identities, so it keeps all of them. Count its
# per-channel sums in the backward: we needed two (Σ d and Σ d·x̂) besides those of dβ and dγ —
# and even those two are γ·dβ and γ·dγ. Evaluate the graph node by node (float64) and look at
# each sum:

# %%
values = run_graph_values(joint, arrays64)
names = value_names(joint)
channel_sums = [n for n in joint.nodes
                if n.role == "backward" and n.op == "reduce_sum" and n.attrs["dims"] == (0, 2, 3)]
sigma_hat = np.sqrt(x.var(axis=(0, 2, 3)) + eps)
meaning = {0: ("Σ g  = ∂loss/∂β", dbeta_hand), 1: ("Σ g·x̂ = ∂loss/∂γ", dgamma_hand),
           2: ("Σ −d·x̂/σ̂ = −γ/σ̂ · ∂loss/∂γ", -gamma / sigma_hat * dgamma_hand),
           3: ("Σ −d/σ̂  = −γ/σ̂ · ∂loss/∂β", -gamma / sigma_hat * dbeta_hand),
           4: ("Σ −2 (x−μ) · ∂loss/∂σ² / m = 0", np.zeros(channels))}
assert len(channel_sums) == len(meaning)
for k, node in enumerate(channel_sums):
    text, expected = meaning[k]
    per_channel = np.array2string(values[node], precision=4)
    print(f"{names[node]:4} {'.'.join(node.scope):16} {per_channel:36} {text}")
    assert np.allclose(values[node], expected, rtol=1e-10, atol=1e-12)

# %% [markdown]
# **What you should see:** five per-channel sums. The first two are the parameter gradients;
# the next two are the same numbers times −γ/σ̂ (a human factors the constant out of the sum and
# reuses it; the compiler sums again); the last, in the scope `batch_norm.var`, is zero up to
# rounding (about 1e-15) — the sum the derivation could drop. Fused into one kernel, the extra sums
# cost arithmetic but no extra trips to memory.
#
# ## The fused kernels
#
# Batch norm's reductions all run over the same values — one channel across the batch — so the
# fusion pass builds *row kernels* around them, where a row is a channel. The forward alone
# (`O.batch_norm` in training mode, float32, through the Triton interpreter) is one kernel:

# %%
def bn_forward(x, gamma, beta):
    return O.batch_norm(x, None, None, gamma, beta, training=True)


forward_program = C.compile(bn_forward, O.spec(shape), O.spec((channels,)), O.spec((channels,)), backend="interpret")
y_kernel = forward_program(*arrays32[:3])
print(f"kernels: {forward_program.report()['kernels']}   (one per primitive: "
      f"{forward_program.report()['unfused_kernels']})")
(kernel_file, kernel_text), = forward_program.compiled.files()
print(f"---- kernels/{kernel_file} ----")
tut.show_code(kernel_text, start="@triton.jit")
print("per channel: mean", np.round(y_kernel.mean(axis=(0, 2, 3)), 6),
      " std", np.round(y_kernel.std(axis=(0, 2, 3)), 6))
print("             beta", np.round(beta, 6), "    gamma", np.round(gamma, 6))
assert forward_program.report()["kernels"] == 1 and "c0 * 48 + rows * 16 + c1 * 4 + c2" in kernel_text
assert "BLOCK_ROWS=4, BLOCK_COLS=128" in kernel_text
assert np.allclose(y_kernel.mean(axis=(0, 2, 3)), beta, atol=1e-5) and np.allclose(y_kernel.std(axis=(0, 2, 3)),
                                                                                     gamma, rtol=1e-3)

# %% [markdown]
# **What you should see:** one program per block of `BLOCK_ROWS` channels (here 4 rows, enough
# for all 3), each loading its channel's 128 values at once. A channel is not contiguous in
# memory — its values are spread over the 8 examples — so the column index is split into
# (example, row, column) as `c0`, `c1`, `c2`, and the address is `c0 * 48 + rows * 16 + c1 * 4
# + c2` (48 = C·H·W, 16 = H·W). Then the forward's lines in order: `tl.sum` for μ, x − μ, its
# square, `tl.sum` for σ², `tl.sqrt`, the division, γ and β, and one store. The output has, per
# channel, mean β and standard deviation γ, as promised (printed under the kernel).
#
# Inside a network the picture is fuller. A convolution, batch norm, ReLU, global average
# pooling and a cross-entropy; the gradients of the convolution weight, γ and β:

# %%
def small_network(images, conv_weight, gamma, beta, labels):
    h = O.relu(O.batch_norm(O.conv2d(images, conv_weight, padding=1), None, None, gamma, beta, training=True))
    return O.cross_entropy(O.flatten(O.adaptive_avg_pool2d(h, 1), 1), labels)


network_step = C.compile(small_network, O.spec((16, 4, 8, 8)), O.spec((4, 4, 3, 3)), O.spec((4,)), O.spec((4,)),
                         O.spec((16,), "int64"), grad_argnums=(1, 2, 3), backend="interpret")
network_names = value_names(network_step.graph)
for kernel in network_step.report()["kernel_bytes"]:
    print(f"{kernel['name']:40} {len(kernel['nodes']):3} nodes   reads {kernel['bytes_read']:6} B, "
          f"writes {kernel['bytes_written']:6} B")
pictures = network_step.render(tut.path("network"))
tut.show_file(tut.picture(pictures, "kernels"))
kernel_names = [k["name"] for k in network_step.report()["kernel_bytes"]]
assert kernel_names == ["k00_fwd_conv2d", "k01_fwd_batch_norm_relu", "k02_fwd_adaptive_avg_pool2d_flatten", "k03_fwd_bwd_cross_entropy",
                        "k04_bwd_adaptive_avg_pool2d_relu_batch_norm", "k05_bwd_reduce_sum", "k06_bwd_reduce_sum",
                        "k07_bwd_batch_norm_conv2d", "k08_bwd_conv2d_grad_weight"]

# %% [markdown]
# **What you should see:** nine kernels. In the forward, `k01_fwd_batch_norm_relu` is the whole
# batch norm *and* the ReLU after it: the statistics, the normalization, γ, β and the max with 0
# in one pass over the convolution's output. The backward of batch norm is spread over four:
# `k04_bwd_adaptive_avg_pool2d_relu_batch_norm` (the pointwise part: the pooling's and the ReLU's
# gradients, × γ, ÷ σ̂), `k05_bwd_reduce_sum` and `k06_bwd_reduce_sum` (∂loss/∂β and ∂loss/∂γ), and
# `k07_bwd_batch_norm_conv2d`, the row kernel with the remaining sums and the four paths' Σ, which
# hands ∂loss/∂(conv output) to `k08_bwd_conv2d_grad_weight`. In the picture, each kernel is a purple
# cluster labelled with the bytes it reads and writes.
#
# Why four and not one? The fusion pass writes down the reason for every pair of nodes it did
# not fuse (`03_fusion.txt` of `Program.dump`). The one that splits batch norm's backward:

# %%
fusion_text = network_step.compiled.fusion.text()
reasons = [line.strip() for line in fusion_text.splitlines()
           if "(where) -> " in line and "(reduce_sum)" in line and "neither a whole row" in line]
print(reasons[0])

# %% [markdown]
# The pooling's gradient (a `div` of shape [16,4,1,1], one value per example and channel) is
# neither a whole channel nor one value per channel, and a row kernel over channels only takes
# those two kinds of input. So the pointwise work that reads it became a kernel of its own,
# `k04`, and the sums over its outputs start new kernels. Those sums (`k05`, `k06` and the row
# kernel `k07`) reduce over the same channels, but none reads another's result: they are
# *siblings*, and the compiler merges siblings only when they are pointwise. Fusion is greedy and
# local, and every "no" has a reason you can read.
#
# ## Train mode and eval mode
#
# At test time we want one image's prediction to depend on that image only, and a batch of one
# has no variance to speak of. So `BatchNorm2d` keeps **running statistics**: every training
# step moves them towards the batch's,
#
#     running_mean ← (1 − momentum) · running_mean + momentum · μ_batch           (momentum = 0.1)
#     running_var  ← (1 − momentum) · running_var  + momentum · σ²_batch · m/(m − 1)
#
# (the variance unbiased, as torch does), and in evaluation mode it normalizes with them
# instead of the batch's. They start at 0 and 1. We feed a `BatchNorm2d(3)` forty training
# batches whose channels have means (1, −3, 0) and standard deviations (2, 0.5, 1):

# %%
layer = L.BatchNorm2d(channels)
layer.build((channels, height, width), rng=0)


def sample_batch(rng):
    values = rng.standard_normal(shape) * true_std.reshape(1, -1, 1, 1) + true_mean.reshape(1, -1, 1, 1)
    return values.astype(np.float32)


data_rng = np.random.default_rng(1)
running_means, running_vars = [layer.state["running_mean"].copy()], [layer.state["running_var"].copy()]
for _ in range(40):
    layer(sample_batch(data_rng), training=True)            # training=True also stores the new running stats
    running_means.append(layer.state["running_mean"].copy())
    running_vars.append(layer.state["running_var"].copy())
running_means, running_vars = np.array(running_means), np.array(running_vars)
print("after 40 steps: running_mean", np.round(running_means[-1], 3), "  running_var", np.round(running_vars[-1], 3))

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
colours = ["tab:blue", "tab:orange", "tab:green"]
for c in range(channels):
    left.plot(running_means[:, c], color=colours[c], label=f"channel {c}")
    left.axhline(true_mean[c], color=colours[c], linestyle=":")
    right.plot(running_vars[:, c], color=colours[c], label=f"channel {c}")
    right.axhline(true_std[c] ** 2, color=colours[c], linestyle=":")
left.set_title("running_mean (dotted: the data's mean)")
right.set_title("running_var (dotted: the data's variance)")
for ax in (left, right):
    ax.set_xlabel("training steps")
    ax.legend(fontsize=8)
tut.show(fig, "running_statistics")
assert np.allclose(running_means[-1], true_mean, atol=0.3) and np.allclose(running_vars[-1], true_std ** 2, rtol=0.2)

# %% [markdown]
# **What you should see:** each running statistic moves from its start (0 for the means, 1 for
# the variances) towards the dotted line of the data's value, closing 10 % of the remaining gap
# per step — after 40 steps within 0.3 of the true means and 20 % of the true variances, still
# wobbling with each batch's own statistics. Channel 2's data has mean 0 and variance 1, the
# starting values, so its lines stay where they began.
#
# Now one batch through both modes, and the property that eval mode buys: change the *other*
# examples of the batch and see whether example 0's output moves.

# %%
def train_mode(batch):
    """The layer in training mode, without storing the new running statistics: `forward`
    returns (output, new state) and leaves the layer alone."""
    output, _new_state = layer.forward(layer.params, layer.state, batch, training=True)
    return output


test_batch = sample_batch(data_rng)
other_batch = test_batch.copy()
other_batch[1:] = sample_batch(data_rng)[1:] * 3.0                  # same example 0, different company
train_out, train_out_other = train_mode(test_batch), train_mode(other_batch)
eval_out, eval_out_other = layer(test_batch), layer(other_batch)     # training=False: the running stats
print(f"train vs eval on the same batch, largest difference: {np.abs(train_out - eval_out).max():.3f}")
print(f"example 0 when the rest of the batch changes:  "
      f"train mode moves {np.abs(train_out[0] - train_out_other[0]).max():.3f},  "
      f"eval mode moves {np.abs(eval_out[0] - eval_out_other[0]).max():.3f}")
assert 0 < np.abs(train_out - eval_out).max() < 0.5
assert np.abs(train_out[0] - train_out_other[0]).max() > 0.1 and np.array_equal(eval_out[0], eval_out_other[0])

# %% [markdown]
# **What you should see:** train and eval outputs are close but not equal (the batch's
# statistics are not quite the running ones); and in train mode example 0's output changes when
# the other examples change, while in eval mode it does not move at all. That is why a trained
# network must be switched to eval mode before you use it (`step.evaluate` in `runtime.training.loop`
# does it; forgetting it is a classic bug), and why batch norm misbehaves with tiny batches.
#
# ## Exercises
#
# Each exercise has a reference answer filled in; change it to your own and rerun the cell —
# the check tells you whether it is right.
#
# **Exercise 1.** A fresh `BatchNorm2d` (running_mean = 0, momentum 0.1) sees k = 10 training
# batches whose channel mean is exactly 5. What is running_mean then? (The check runs the
# layer.)

# %%
answer_1 = 5.0 * (1 - 0.9 ** 10)                        # your answer here
fresh = L.BatchNorm2d(1)
fresh.build((1, 2, 2), rng=0)
constant_mean_batch = np.array([[[[4.0, 6.0], [5.0, 5.0]]], [[[3.0, 7.0], [5.0, 5.0]]]], np.float32)   # mean 5
for _ in range(10):
    fresh(constant_mean_batch, training=True)
tut.check(1, "running_mean after 10 batches of mean 5", got=answer_1, want=float(fresh.state["running_mean"][0]),
          tol=1e-5, hint="each step keeps 90 % of the gap between the running mean and 5")

# %% [markdown]
# **Exercise 2.** With γ = 1 and β = 0, what is the gradient of Σ batch_norm(x) (the sum of
# all outputs) with respect to x? Think first: what is the mean of each output channel, whatever
# x is? (The check asks chainrule, in float64.)

# %%
answer_2 = np.zeros(shape)                              # your answer here
(_, (dx_sum,)) = C.value_and_grad(lambda x: O.sum(O.batch_norm(x, None, None, training=True)), argnums=(0,),
                                  backend="reference")(x)
tut.check(2, "∂ Σ batch_norm(x) / ∂x", got=answer_2, want=dx_sum, tol=1e-9,
          hint="every channel of the output has mean 0 whatever x is, so its sum cannot change")

# %% [markdown]
# **Exercise 3.** A fresh layer (running_var = 1) takes one training step on our batch `x`.
# What is its running_var for channel 0? Remember the m/(m − 1).

# %%
answer_3 = 0.9 * 1.0 + 0.1 * x[:, 0].var(ddof=1)        # your answer here
one_step = L.BatchNorm2d(channels)
one_step.build((channels, height, width), rng=0)
one_step(x.astype(np.float32), training=True)
tut.check(3, "running_var of channel 0 after one step", got=answer_3, want=float(one_step.state["running_var"][0]),
          tol=1e-5, hint="the running variance uses the unbiased variance: np.var(..., ddof=1)")

# %%
tut.done()
