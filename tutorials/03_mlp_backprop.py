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
# # 3. Backpropagation through an MLP
#
# Tutorial 2 differentiated one neuron. A multi-layer perceptron is neurons feeding neurons,
# and backpropagation is the chain rule applied layer after layer, from the loss back to the
# first weights. You will
#
# * read the backward graph chainrule derives for a two-layer network of sigmoid units,
# * write the same backward pass by hand in NumPy — the "deltas" of the textbooks — and
#   match it with the compiler's gradients,
# * find *fan-out* — a value read by several others gets the **sum** of their gradients — in
#   three places: a hidden unit feeding every output unit, a bias added to every example, and
#   a value read twice by the loss,
# * measure, layer by layer, how the gradient fades through ten sigmoid layers and why it does
#   not through ReLU layers.
#
# Pictures go to `tutorials/out/03_mlp_backprop/`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from compiler.autodiff import FANOUT_SUM
from ops.printer import value_names
from runtime.tutorial import Tutorial

tut = Tutorial("03_mlp_backprop")

# %% [markdown]
# ## The network
#
# Two inputs, three hidden sigmoid units, two sigmoid outputs. The data are the four corners
# of the unit square; the first output should learn XOR, the second AND. The loss is the mean
# squared error over the 4 × 2 outputs.
#
#     a₁ = x W₁ + b₁     h = σ(a₁)        (hidden layer, [4, 3])
#     a₂ = h W₂ + b₂     ŷ = σ(a₂)        (output layer, [4, 2])
#     J = mean((ŷ − y)²)

# %%
x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
y = np.array([[0, 0], [1, 0], [1, 0], [0, 1]], np.float32)      # columns: XOR, AND
rng = np.random.default_rng(0)
W1 = rng.normal(0, 1, (2, 3)).astype(np.float32)
b1 = np.zeros(3, np.float32)
W2 = rng.normal(0, 1, (3, 2)).astype(np.float32)
b2 = np.zeros(2, np.float32)


def mlp_loss(W1, b1, W2, b2, x, y):
    h = O.sigmoid(x @ W1 + b1)
    y_hat = O.sigmoid(h @ W2 + b2)
    return O.mse_loss(y_hat, y)


specs = [O.spec(a.shape) for a in (W1, b1, W2, b2, x, y)]
forward = C.trace(mlp_loss, *specs)
print(forward)

# %% [markdown]
# ## The backward graph
#
# **What you should see** (forward faded, backward orange, read from the loss down): the
# seed enters `div (1.0, 8.0)` — the mean's 1/8 — which `reshape` and `expand` hand to all
# eight outputs. `mse_loss` computes d = ŷ − y and then d · d: d is read twice, so two `mul`
# nodes send gradients back to it and a **Σ** adds them (2d, as in tutorial 1's x · x). Two
# `mul`s apply the output sigmoid's derivative ŷ(1 − ŷ) (with a `sub (1.0)` for 1 − ŷ); the
# result is ∂J/∂a₂, the output layer's *delta*. Three nodes read it: `∂loss/∂W2` (a `matmul`
# with hᵀ, a `permute` of h), `∂loss/∂b2` (a `reduce_sum` over the batch) and a `matmul` with
# W₂ᵀ that carries the gradient back to h. Two more `mul`s for the hidden sigmoid give the
# hidden delta ∂J/∂a₁, and the same pattern gives `∂loss/∂W1` and `∂loss/∂b1`. Dashed edges:
# the forward values the backward reads — both sigmoid outputs, d, W₂ and x.

# %%
joint = C.grad_graph(forward, argnums=(0, 1, 2, 3))
print(joint)
tut.show(joint, "backward")

# %% [markdown]
# ## The same backward pass by hand
#
# Backpropagation names the gradient at each layer's pre-activation its *delta*, δ = ∂J/∂a.
# From the output down:
#
#     ∂J/∂ŷ = 2(ŷ − y)/8
#     δ₂ = ∂J/∂ŷ ⊙ ŷ(1 − ŷ)                      ∂J/∂W₂ = hᵀ δ₂     ∂J/∂b₂ = Σₙ δ₂[n]
#     ∂J/∂h[n, j] = Σₖ W₂[j, k] · δ₂[n, k]        (fan-out: unit j feeds every output k)
#     δ₁ = ∂J/∂h ⊙ h(1 − h)                       ∂J/∂W₁ = xᵀ δ₁     ∂J/∂b₁ = Σₙ δ₁[n]
#
# The sum over k is written as a loop below, to make it visible; it is the matrix product
# δ₂ W₂ᵀ.

# %%
def sigmoid(a):
    return 1 / (1 + np.exp(-a))


h = sigmoid(x @ W1 + b1)
y_hat = sigmoid(h @ W2 + b2)
dJ_dyhat = 2 * (y_hat - y) / y.size
delta2 = dJ_dyhat * y_hat * (1 - y_hat)
dJ_dh = np.zeros_like(h)
for j in range(h.shape[1]):                 # every hidden unit j ...
    for k in range(y.shape[1]):             # ... collects the gradient of every output k it feeds
        dJ_dh[:, j] += W2[j, k] * delta2[:, k]
assert np.allclose(dJ_dh, delta2 @ W2.T)
delta1 = dJ_dh * h * (1 - h)
by_hand = {"W1": x.T @ delta1, "b1": delta1.sum(0), "W2": h.T @ delta2, "b2": delta2.sum(0)}

# %% [markdown]
# Now the compiler: `C.compile` with `grad_argnums` builds the joint graph above, fuses it
# and generates Triton kernels (run by Triton's interpreter on a machine without a GPU).

# %%
step = C.compile(mlp_loss, *specs, grad_argnums=(0, 1, 2, 3))
loss_value, grads = step(W1, b1, W2, b2, x, y)
print(f"J = {float(loss_value):.6f}  (by hand {np.mean((y_hat - y) ** 2):.6f})")
for (name, mine), compiled in zip(by_hand.items(), grads):
    print(f"∂J/∂{name}: largest difference hand vs kernels {np.max(np.abs(mine - compiled)):.1e}")
    assert np.allclose(mine, compiled, atol=1e-6)

# %% [markdown]
# ## Fan-out, three times
#
# **1. A hidden unit feeds every output unit.** Its gradient is the sum over the output
# units — the loop above. In the graph it is not a Σ node: the sum over k is the inner loop of
# the `matmul` δ₂ W₂ᵀ. The compiler generates it as a matrix-multiplication kernel and fuses
# the hidden sigmoid's derivative h(1 − h) into it as an *epilogue*, applied to the tile of
# results while it is still in registers. The K loop accumulates Σₖ; the epilogue's two
# multiplications are the `mul`s of the graph:

# %%
names = value_names(step.graph)
kernel_files = step.compiled.files()          # (file name, text), in launch order, like step.schedule.kernels
pass_back = next(k for k in step.schedule.kernels
                 if any(n.op == "matmul" and n.role == "backward" for n in k.nodes)
                 and any(n.op == "mul" for n in k.nodes))
filename, source = kernel_files[pass_back.index]
tut.show_code(source, start="acc = tl.zeros", end="tl.store", title=filename)

# %% [markdown]
# **2. A bias is added to every example.** b₂ is broadcast to the 4 rows of the batch, so
# its gradient is the sum of δ₂ over the rows — the `reduce_sum` of the graph. The compiler
# does not give it a kernel of its own: the weight gradient hᵀ δ₂ already loads every tile of
# δ₂ in its K loop (K is the batch here), so the bias gradient *rides along* and sums the
# same tiles. (The same is true of the weights themselves: ∂J/∂W₂ = hᵀ δ₂ is a sum over the
# examples of the batch, since every example uses the same W₂.)

# %%
rider = next(n for n in step.graph.nodes if n.op == "reduce_sum" and n.role == "backward")
bias_kernel = next(k for k in step.schedule.kernels if rider in k.nodes)
filename, source = kernel_files[bias_kernel.index]
tut.show_code(source, start=f"{names[rider]} = tl.zeros", end=f"tl.store({names[rider]}_ptr", title=filename)

# %% [markdown]
# **3. A value read twice in the graph.** That is the Σ node: d = ŷ − y is read twice by
# d · d, and its gradient is the sum of the two. After the simplify pass, which merges the
# two identical `mul` nodes (common subexpression elimination), it is literally `add(t, t)`:

# %%
for node in step.graph.nodes:
    if FANOUT_SUM in node.scope:
        print(f"{names[node]} = {node.op}({', '.join(names[i] for i in node.inputs)})   "
              f"# scope: {'.'.join(node.scope)}")

# %% [markdown]
# The whole step as kernels: every cluster is one generated kernel, labelled with its name and
# the bytes it reads and writes (the small white notes, `permute`, are views: no kernel, the
# reader follows swapped strides). **What you should see:** six kernels — the forward matmul
# with the bias and the sigmoid fused into it (it also stores 1 − h for the backward); the
# output layer's h W₂ alone (`01_matmul`); its bias, sigmoid, the loss and the backward down
# to δ₂ in one kernel around the loss's reduction; the pass-back matmul with its sigmoid
# epilogue; and the two weight-gradient matmuls with the bias gradients riding along.

# %%
print("kernels:", ", ".join(f for f, _ in step.compiled.files()))
print(f"{step.report()['kernels']} kernels; one per node would be {step.report()['unfused_kernels']}")
assert step.report()["kernels"] == 6
pictures = step.render(tut.path("compiled_step"))      # the four pictures (.dot without graphviz)
tut.show_file(tut.picture(pictures, "kernels"))

# %% [markdown]
# ## Vanishing gradients, measured per layer
#
# Backpropagation multiplies, at every layer, by the activation's derivative and by a weight
# matrix. The sigmoid's derivative σ'(a) = σ(a)(1 − σ(a)) is at most 1/4 (at a = 0): in a
# network of ten layers, with a sigmoid after each of the first nine, the activations alone
# multiply the gradient by at most (1/4)⁹ ≈ 4·10⁻⁶ on its way from the last weights to the
# first. ReLU's derivative is exactly 1 wherever the unit is active: no shrinking from the
# activation at all.
#
# Here are two ten-layer networks, 32 units wide, one with sigmoid and one with ReLU between
# the layers, each with its textbook initialization (Glorot/Xavier: variance 1/fan-in for
# sigmoid; He: 2/fan-in for ReLU). We ask chainrule for all ten weight gradients and compare
# their sizes ‖∂J/∂Wₗ‖.

# %%
depth, width, batch = 10, 32, 64
data_rng = np.random.default_rng(1)
inputs = data_rng.normal(size=(batch, width)).astype(np.float32)
targets = data_rng.normal(size=(batch, width)).astype(np.float32)


def deep_network(activation):
    def deep_loss(x, y, *weights):
        h = x
        for W in weights[:-1]:
            h = activation(h @ W)
        return O.mse_loss(h @ weights[-1], y)
    return deep_loss


gradient_norms, weights_of = {}, {}
for activation, variance in ((O.sigmoid, 1.0), (O.relu, 2.0)):
    weights = [(data_rng.normal(size=(width, width)) * np.sqrt(variance / width)).astype(np.float32)
               for _ in range(depth)]
    value_and_grads = C.value_and_grad(deep_network(activation), argnums=tuple(range(2, 2 + depth)))
    _, layer_grads = value_and_grads(inputs, targets, *weights)
    gradient_norms[activation.__name__] = np.array([np.linalg.norm(g) for g in layer_grads])
    weights_of[activation.__name__] = weights

for name, norms in gradient_norms.items():
    print(f"{name:>7}: ‖∂J/∂W‖ per layer 1..10:", np.array2string(norms, precision=2, max_line_width=200))

# %% [markdown]
# Why the sigmoid network loses a factor of about 4 per layer: the mean derivative σ'(aₗ) over
# each layer's units and examples, from a NumPy forward pass with the same weights, is close
# to its maximum 1/4 — and the weights, scaled to keep the forward signal's size, do not make
# up for it.

# %%
h = inputs
mean_derivative = []
for W in weights_of["sigmoid"][:-1]:
    h = sigmoid(h @ W)
    mean_derivative.append(float(np.mean(h * (1 - h))))
sigmoid_ratio = gradient_norms["sigmoid"][:-1] / gradient_norms["sigmoid"][1:]
relu_ratio = gradient_norms["relu"][:-1] / gradient_norms["relu"][1:]
print("mean σ'(a) in hidden layers 1..9:       ", np.array2string(np.array(mean_derivative), precision=3))
print("‖∂J/∂Wₗ‖ / ‖∂J/∂Wₗ₊₁‖, sigmoid, l = 1..9:", np.array2string(sigmoid_ratio, precision=3))
print("‖∂J/∂Wₗ‖ / ‖∂J/∂Wₗ₊₁‖, relu,    l = 1..9:", np.array2string(relu_ratio, precision=3))
assert 0.2 < min(mean_derivative) and max(mean_derivative) <= 0.25
assert 0.15 < np.median(sigmoid_ratio) < 0.35 and np.median(relu_ratio) > 0.7      # "about 4 per layer"
assert 1e-7 < gradient_norms["sigmoid"][0] / gradient_norms["sigmoid"][-1] < 1e-5   # "six orders of magnitude"
assert gradient_norms["relu"].max() / gradient_norms["relu"].min() < 5

# %% [markdown]
# **What you should see:** on the log scale the sigmoid network's gradient norms fall in a
# straight line from the last layer to the first — six orders of magnitude over ten layers —
# so its first layers would barely move in training. The ReLU network's stay within a small
# factor of each other. Right: the factor the gradient is multiplied by from one layer to the
# one before it; the sigmoid's stays near the mean σ'(a), the ReLU's near 1. (The first factor is smaller for both: the gradient of W₁ is
# xᵀδ₁, made with the input x rather than with a hidden layer's output.)

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
layers = np.arange(1, depth + 1)
for name, colour in (("sigmoid", "tab:red"), ("relu", "tab:blue")):
    left.semilogy(layers, gradient_norms[name], marker="o", color=colour, label=name)
left.set_xlabel("layer l (1 = next to the input)")
left.set_ylabel("‖∂J/∂Wₗ‖  (log scale)")
left.set_xticks(layers)
left.set_title("gradient size per layer, 10 layers")
left.legend()
right.plot(layers[:-1], sigmoid_ratio, marker="o", color="tab:red", label="sigmoid: ‖∂J/∂Wₗ‖ / ‖∂J/∂Wₗ₊₁‖")
right.plot(layers[:-1], relu_ratio, marker="o", color="tab:blue", label="relu: ‖∂J/∂Wₗ‖ / ‖∂J/∂Wₗ₊₁‖")
right.plot(layers[:-1], mean_derivative, ls="--", color="tab:red", label="sigmoid: mean σ'(aₗ)")
right.axhline(0.25, color="0.6", ls=":", label="max σ' = 1/4")
right.set_xlabel("layer l")
right.set_xticks(layers[:-1])
right.set_title("factor per layer")
right.legend(fontsize=8)
tut.show(fig, "vanishing_gradients")

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** The gradient of the hidden bias b₁ for unit j is Σₙ δ₁[n, j]. Compute
# ∂J/∂b₁ with your own loops from `h`, `W2` and `delta2` of the small network — for each
# hidden unit, the fan-out sum over the output units, times h(1 − h), summed over the
# examples. The check compares with the compiled kernels' gradient.

# %%
h_small = sigmoid(x @ W1 + b1)
answer_1 = np.array([sum(h_small[n, j] * (1 - h_small[n, j]) * sum(W2[j, k] * delta2[n, k] for k in range(2))
                         for n in range(4)) for j in range(3)])       # your answer here
tut.check(1, "∂J/∂b1 by hand", got=answer_1, want=grads[1], tol=1e-5)

# %% [markdown]
# **Exercise 2.** Add weight decay to the loss: J' = J + λ·Σ W₂² with λ = 0.01. Now W₂ is
# read twice (by the matmul and by the penalty), so its gradient gets a Σ node. Predict
# ∂J'/∂W₂ from the gradient you already have, without chainrule; the check differentiates
# J' and also counts the Σ nodes of its joint graph.

# %%
weight_decay = 0.01


def decayed_loss(W1, b1, W2, b2, x, y):
    return mlp_loss(W1, b1, W2, b2, x, y) + weight_decay * O.sum(W2 ** 2)


answer_2 = by_hand["W2"] + 2 * weight_decay * W2           # your answer here
decayed_grads = C.grad(decayed_loss, argnums=(0, 1, 2, 3), backend="reference")(W1, b1, W2, b2, x, y)
tut.check(2, "∂J'/∂W2 with weight decay", got=answer_2, want=decayed_grads[2], tol=1e-5,
          hint="the penalty λ·ΣW² adds its own derivative to the gradient that was there")
decayed_joint = C.grad_graph(C.trace(decayed_loss, *specs), argnums=(0, 1, 2, 3))
sums = [n for n in decayed_joint.nodes if FANOUT_SUM in n.scope]
tut.check(2, "one more Σ node than without the penalty",
          got=len(sums), want=1 + sum(FANOUT_SUM in n.scope for n in joint.nodes))

# %% [markdown]
# **Exercise 3.** The root of the vanishing: where does σ'(a) reach its maximum, and what is
# the maximum? Give (a, σ'(a)). The check asks chainrule for σ'(a) on a fine grid of a.

# %%
answer_3 = (0.0, 0.25)                                       # your answer here
grid = np.linspace(-6, 6, 1201)
derivative = C.grad(lambda a: O.sum(O.sigmoid(a)), backend="reference")(grid)
tut.check(3, "where σ' is largest, and its value", got=answer_3,
          want=(grid[np.argmax(derivative)], derivative.max()), tol=1e-9)

# %%
tut.done()
