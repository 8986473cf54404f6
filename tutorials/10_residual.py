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
# # 10. Residual connections
#
# A residual block computes out = h + F(h): the block F, plus its input carried around it on a
# *skip connection*. That one `+` is why networks with a hundred layers train at all (He et
# al., 2015). You will
#
# * see with the chain rule — and in the backward graph chainrule builds — that the gradient
#   reaching h is the **sum of two paths**, one through F and one straight along the skip,
# * find that sum in the generated kernels: it costs no kernel of its own,
# * measure the gradient of every layer of a deep plain stack and of the same stack with skips:
#   in the plain one it vanishes towards the input, with skips it does not — and only the
#   residual stack learns.
#
# Pictures go to `tutorials/out/10_residual/`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from ops import layers as L
from runtime.training.data import digits_split
from runtime.training.loop import fit
from runtime.tutorial import Tutorial

tut = Tutorial("10_residual")

# %% [markdown]
# ## One block, by the chain rule
#
# Take h = sigmoid(x·W_in), one residual block out = h + sigmoid(h·W_block), and a loss that
# reads `out`. The chain rule, for h:
#
#     ∂loss/∂h = ∂loss/∂out · ∂out/∂h = ∂loss/∂out · (1 + ∂F/∂h)
#              = ∂loss/∂out  +  ∂loss/∂out · ∂F/∂h
#                  (skip)          (through the block)
#
# The `+` of the forward passes its gradient unchanged to both of its inputs, so h — read by
# the block *and* by the skip — receives two gradients, and they add up.

# %%
def one_block(w_in, w_block, x, y):
    h = O.sigmoid(x @ w_in)                  # the block's input
    out = h + O.sigmoid(h @ w_block)         # the skip plus the block
    return O.mean(out * y)                   # a loss that reads out (y: a fixed target direction)


block_specs = [O.spec((8, 16)), O.spec((16, 16)), O.spec((4, 8)), O.spec((4, 16))]
block_program = C.compile(one_block, *block_specs, grad_argnums=(0, 1), backend="interpret")
print(block_program.graph)
tut.show(block_program.graph, "skip_backward")

# %% [markdown]
# **What you should see:** near the bottom, a Σ node with two orange edges coming in. One comes
# from the `matmul` just above it: that is the path through the block (the gradient through
# `sigmoid` and back through `h @ w_block`). The other comes straight down from the `mul` under
# the loss, which is ∂loss/∂out: that is the skip — the forward's `add` has no backward node
# at all, its gradient is a wire. Below the Σ, the sum goes back through the first sigmoid to
# ∂loss/∂w_in. In the program it is the line marked `fanout_sum`:

# %%
program_lines = str(block_program.graph).splitlines()
sum_line = next(line for line in program_lines if "fanout_sum" in line)
print(sum_line)

# %% [markdown]
# One of its two inputs is the gradient of `out` itself, passed along unchanged by the skip;
# the other is the result of the backward `matmul`. Whatever happens inside the block — even
# if its gradient is tiny — the gradient of `out` arrives at h in full.
#
# ## The Σ in the kernels
#
# The sum is no extra kernel. The GEMM that computes the block path's gradient adds the skip's
# gradient to its output tile while it is in registers (an epilogue, like a bias), then goes
# on with the first sigmoid's backward:

# %%
kernel_files = dict(block_program.compiled.files())
sum_kernel_name, sum_kernel = next((name, text) for name, text in kernel_files.items()
                                   if "fanout_sum" in text.split('"""')[1] and "tl.dot" in text)
print(sum_kernel_name)
tut.show_code(sum_kernel, start="# epilogue", end="# store")

# %% [markdown]
# `acc` is the tile of the backward matmul (the block path). After the loads, `t17 = t9 + acc`
# adds the skip's gradient `t9` (∂loss/∂out) to it — that is the Σ — and the next two lines
# multiply by σ' = σ·(1 − σ) of the first sigmoid (`t1` is σ and `t19` is 1 − σ, both written
# by the first layer's forward kernel). One kernel, one store.

# %%
sum_node_name, skip_name = sum_line.split("=")[0].strip(), sum_line.split("add(")[1].split(",")[0]
print(f"the Σ is {sum_node_name}; the skip brings {skip_name}")
assert (sum_node_name, skip_name) == ("t17", "t9") and f"{sum_node_name} = {skip_name} + acc" in sum_kernel
first_kernel = next(text for name, text in kernel_files.items() if name.startswith("00_"))
written_by_first = first_kernel.split("writes:")[1].split('"""')[0].split()[::2]   # its header's `writes:`
assert written_by_first == ["t1", "t19"]

# %% [markdown]
# ## Depth with and without skips
#
# Now stack ten blocks. Each block is two layers, Dense → Sigmoid → Dense, like the two
# convolutions of ResNet's basic block. The *plain* stack is the same 22 Dense layers (and
# sigmoids) in the same order without the skips; the *residual* stack wraps each block in `L.Residual`. Same
# weights: both are initialized from seed 0 (Xavier, the initialization meant for sigmoid).

# %%
blocks, width = 10, 32


def block():
    return [L.Dense(width, width, init="xavier"), L.Sigmoid(), L.Dense(width, width, init="xavier")]


def stack(skips):
    layers = [L.Dense(64, width, init="xavier"), L.Sigmoid()]
    for _ in range(blocks):
        layers += [L.Residual(block())] if skips else block()
    layers += [L.Dense(width, 10, init="xavier")]
    return L.Sequential(layers, input_shape=(64,)).init(seed=0)


plain, residual = stack(skips=False), stack(skips=True)
print(f"plain: {plain.num_parameters()} parameters, residual: {residual.num_parameters()}")
print(residual.summary().split("residual_1")[0] + "...")
same_weights = all(np.array_equal(a, b) for (_, a), (_, b) in zip(plain.parameters(), residual.parameters()))
print("the two stacks start from the same weights:", same_weights)
assert same_weights

# %% [markdown]
# The gradient of every weight, for one batch of 128 digits, at initialization. The NumPy
# reference backend computes them: the kernels are not the point here.

# %%
digits = digits_split(seed=0)
x_batch, y_batch = digits["train"][0][:128], digits["train"][1][:128]


def weight_gradient_norms(model):
    """(loss, [(layer name, ‖∂loss/∂W‖) for every Dense layer, input to output])."""
    names = [name for name, _ in model.parameters()]
    params = [array for _, array in model.parameters()]

    def loss(*args):
        logits, _ = model.apply(list(args[:-2]), [], args[-2], training=True)
        return O.cross_entropy(logits, args[-1])

    value, grads = C.value_and_grad(loss, argnums=tuple(range(len(params))), backend="reference")(
        *params, x_batch, y_batch)
    return float(value), [(name[:-len(".weight")], float(np.linalg.norm(g)))
                          for name, g in zip(names, grads) if name.endswith(".weight")]


(plain_loss, plain_norms), (residual_loss, residual_norms) = map(weight_gradient_norms, (plain, residual))
print(f"loss at initialization: plain {plain_loss:.2f}, residual {residual_loss:.2f}")
print(f"{'layer':9s}  {'plain':>9s}  {'residual':>9s}   (names in the residual stack)")
for k, ((_, p), (name, r)) in enumerate(zip(plain_norms, residual_norms), 1):
    print(f"{k:5d}      {p:9.2e}  {r:9.2e}   {name}")

# %%
plain_values = np.array([n for _, n in plain_norms])
residual_values = np.array([n for _, n in residual_norms])
layers = np.arange(1, len(plain_values) + 1)
fig, ax = plt.subplots(figsize=(9, 4))
ax.semilogy(layers, plain_values, "o-", label="plain stack")
ax.semilogy(layers, residual_values, "s-", label="residual stack (skips)")
ax.set_xlabel("layer (1 = next to the input, 22 = the output layer)")
ax.set_ylabel("‖∂loss/∂W‖ (log scale)")
ax.set_title("the gradient of every layer at initialization: 10 blocks of Dense → Sigmoid → Dense")
ax.set_xticks(layers)
ax.legend()
tut.show(fig, "gradient_per_layer")

# %% [markdown]
# **What you should see:** the plain stack's gradients (blue) fall like a staircase on the log
# scale, one step per block (the two layers of a block get about the same), from the output
# towards the input: each block going back divides the gradient by a roughly constant factor,
# so the layers next to the input get about ten million times less gradient than the last
# ones (the numbers are printed below). The residual stack's gradients (orange) stay in a band
# all the way down — they zigzag between the two layers of each block, but no layer is
# starved.
#
# Why: going back through a plain block multiplies the gradient by that block's Jacobian
# W₂ᵀ·diag(σ')·W₁ᵀ, and σ' = σ(1 − σ) is at most 1/4 (exercise 2), so ten such factors shrink
# it geometrically. Going back through a residual block multiplies it by (1 + that Jacobian):
# the 1 is the skip, and however small the block's part, the gradient passes.

# %%
plain_span = plain_values[-2] / plain_values[0]            # the last hidden layer against the first
residual_span = residual_values.max() / residual_values.min()
per_block = (plain_values[-2] / plain_values[1]) ** (1 / blocks)
print(f"plain: the last hidden layer gets {plain_span:.1e} times the gradient of the first; "
      f"about ×{per_block:.1f} per block")
print(f"residual: the largest and the smallest gradient differ by ×{residual_span:.1f}")
assert plain_span > 1e6 and residual_span < 20 and 3 < per_block < 6

# %% [markdown]
# ## And training
#
# Vanishing gradients are not a curiosity: a layer whose gradient is 10⁻⁷ does not move. Train
# both stacks for 5 epochs with SGD and momentum (the reference backend again; about a second
# each).

# %%
results = {}
for label, skips in (("plain", False), ("residual", True)):
    results[label] = fit(stack(skips), digits, epochs=5, batch_size=32, optimizer=O.optim.SGD(lr=0.05, momentum=0.9),
                         backend="reference", progress=False, log=lambda line: None)
    print(f"{label:9s} training loss per epoch {np.round(results[label]['history']['loss'], 3)}  "
          f"test accuracy {results[label]['test_accuracy']:.3f}")

fig, ax = plt.subplots(figsize=(7, 3.6))
for (label, result), colour in zip(results.items(), ("tab:blue", "tab:orange")):
    ax.plot(range(1, 6), result["history"]["loss"], "o-", color=colour, label=f"{label} (training)")
    ax.plot(range(1, 6), result["history"]["val_loss"], "x--", color=colour, label=f"{label} (validation)")
ax.axhline(np.log(10), color="0.6", lw=0.8, ls=":", label="ln 10: guessing")
ax.set_xlabel("epoch")
ax.set_ylabel("cross-entropy")
ax.set_xticks(range(1, 6))
ax.legend()
tut.show(fig, "training")

# %% [markdown]
# **What you should see:** the plain stack's loss sits at ln 10 ≈ 2.30 — the loss of guessing
# uniformly among 10 classes — and its test accuracy is about 0.1: it learns nothing in 5
# epochs. The residual stack's loss falls every epoch and it classifies most test digits
# correctly. (It starts with a higher loss: each block *adds* its output to x, so the
# activations grow with depth and the first logits are large. Real ResNets put a normalization
# in every block — batch norm, tutorial 7.)

# %%
plain_result, residual_result = results["plain"], results["residual"]
assert all(abs(value - np.log(10)) < 0.1 for value in plain_result["history"]["loss"][1:])
assert plain_result["test_accuracy"] < 0.2 and residual_result["test_accuracy"] > 0.7
assert np.all(np.diff(residual_result["history"]["loss"]) < 0)

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** The sum of two paths, by hand: for f(x) = x + tanh(3x), give f'(0.5). (The
# derivative of tanh(u) is 1 − tanh²(u).) The check asks chainrule.

# %%
answer_1 = 1 + 3 * (1 - np.tanh(1.5) ** 2)        # your answer here
derivative = C.grad(lambda x: x + O.tanh(3.0 * x), backend="reference")(np.float64(0.5))
tut.check(1, "f'(0.5) for f(x) = x + tanh(3x)", got=answer_1, want=float(derivative), tol=1e-9,
          hint="the skip contributes 1, the block 3·(1 − tanh²(3x))")

# %% [markdown]
# **Exercise 2.** Why the plain sigmoid stack starves: what is the largest value the derivative
# of the sigmoid, σ'(u) = σ(u)·(1 − σ(u)), takes? The check evaluates chainrule's derivative
# of `O.sigmoid` on a fine grid.

# %%
answer_2 = 0.25                                   # your answer here
grid = np.linspace(-6, 6, 1201)
sigmoid_slope = C.grad(lambda u: O.sum(O.sigmoid(u)), backend="reference")(grid)
tut.check(2, "the largest slope of the sigmoid", got=answer_2, want=float(sigmoid_slope.max()), tol=1e-9,
          hint="σ(1 − σ) is largest where σ = 1/2")

# %% [markdown]
# **Exercise 3.** A residual block whose weights are all zero: out = h + W₂·sigmoid(W₁·h) with
# W₁ = W₂ = 0. By what factor does the gradient change from `out` back to h? The check builds
# the block with `L.Residual` and zeroes its weights.

# %%
answer_3 = 1.0                                    # your answer here
zero_block = L.Sequential([L.Residual(block())], input_shape=(width,)).init(seed=0)
zero_block.set_parameters([np.zeros_like(a) for _, a in zero_block.parameters()])
zero_params = [a for _, a in zero_block.parameters()]
h = np.random.default_rng(0).standard_normal((4, width)).astype(np.float32)
upstream = np.random.default_rng(1).standard_normal((4, width)).astype(np.float32)   # ∂loss/∂out


def read_out(h, *params):
    out, _ = zero_block.apply(list(params), [], h, training=True)
    return O.sum(out * upstream)                  # so that ∂loss/∂out = upstream


grad_h = C.grad(read_out, backend="reference")(h, *zero_params)
tut.check(3, "∂loss/∂h = factor × ∂loss/∂out", got=answer_3 * upstream, want=grad_h, tol=1e-6,
          hint="with zero weights the block's path contributes nothing")

# %%
tut.done()
