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
# # 2. The chain rule by hand and by the compiler
#
# Logistic regression is the smallest model with all the parts of a neural network: a
# weighted sum, a nonlinearity and a loss. For one example x with label y* ∈ {0, 1}:
#
#     z = θ · x                               (the logit)
#     y = σ(z) = 1 / (1 + e^(−z))             (the predicted probability of class 1)
#     J = −(y* log y + (1 − y*) log(1 − y))   (binary cross-entropy)
#
# You will
#
# * derive ∂J/∂θ = (y − y*) · x by hand, one factor of the chain rule at a time,
# * let chainrule derive the same gradient as a graph, and match its backward nodes one by
#   one with the factors of your derivation,
# * see the one thing the compiler does *not* do — cancel the factors — and why that matters,
# * train the model on a batch, through generated Triton kernels.
#
# Run it as a script (`python tutorials/02_chain_rule.py`) or open it as a notebook
# (`jupytext --to notebook tutorials/02_chain_rule.py`). Run as a script it prints only the
# results: the explanations are the comment blocks between the code cells (the notebook's text
# cells), so read it in a notebook, or in an editor next to its output. Pictures go to
# `tutorials/out/02_chain_rule/`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from compiler.autodiff import FANOUT_SUM
from ops.printer import node_code, value_names
from compiler.render import values_dot
from runtime.training.data import blobs
from ops.evaluate import run_graph_values
from runtime.tutorial import Tutorial

tut = Tutorial("02_chain_rule")

# %% [markdown]
# ## One example, forward
#
# Three features: the first is always 1, so θ₀ plays the part of a bias. We work in float64
# here, so that hand and compiler agree to the last digit.

# %%
theta = np.array([0.5, -0.25, 0.75])
x = np.array([1.0, 2.0, -1.0])
y_true = np.float64(1.0)

z = theta @ x
y = 1 / (1 + np.exp(-z))
J = -(y_true * np.log(y) + (1 - y_true) * np.log(1 - y))
print(f"z = {z:.4f}   y = σ(z) = {y:.4f}   J = {J:.4f}")

# %% [markdown]
# ## The derivative by hand
#
# J depends on θ only through y, y only through z, z directly on θ. The chain rule multiplies
# the three local derivatives:
#
#     ∂J/∂θ = ∂J/∂y · ∂y/∂z · ∂z/∂θ
#
# * ∂J/∂y = −y*/y + (1 − y*)/(1 − y) = (y − y*) / (y (1 − y))  — the log's derivative is 1/u;
# * ∂y/∂z = σ(z)(1 − σ(z)) = y (1 − y)  — the sigmoid's derivative, written with its output;
# * ∂z/∂θ = x  — z is linear in θ.
#
# The y (1 − y) of the sigmoid cancels the denominator of the loss, and what is left is short:
#
#     ∂J/∂z = y − y*        ∂J/∂θ = (y − y*) · x
#
# The prediction error, times the input. (It is the same form as the gradient of a squared
# error for linear regression; this is why sigmoid and cross-entropy are paired.)

# %%
dJ_dy = (y - y_true) / (y * (1 - y))
dy_dz = y * (1 - y)
dJ_dz = dJ_dy * dy_dz
grad_by_hand = (y - y_true) * x
print(f"∂J/∂y = {dJ_dy:.4f}   ∂y/∂z = {dy_dz:.4f}   ∂J/∂z = {dJ_dz:.4f} = y − y* = {y - y_true:.4f}")
print("∂J/∂θ by hand:", grad_by_hand)

# %% [markdown]
# ## The same function in chainrule
#
# The model is written with `ops`, exactly as above. `C.trace` records it as a graph: one
# node per primitive. Notice that y (the `sigmoid` node, t2) is read twice: by `log(y)` and by
# `1 − y`.

# %%
def loss(theta, x, y_true):
    z = O.sum(theta * x)
    y = O.sigmoid(z)
    return -(y_true * O.log(y) + (1 - y_true) * O.log(1 - y))


forward = C.trace(loss, theta, x, y_true)
print(forward)
tut.show(forward, "forward")

# %% [markdown]
# `C.value_and_grad` compiles the function together with its gradient. Its answer equals the
# hand derivation:

# %%
value, (grad_by_compiler,) = C.value_and_grad(loss, argnums=(0,), backend="reference")(theta, x, y_true)
print("J     by chainrule:", value)
print("∂J/∂θ by chainrule:", grad_by_compiler)
assert np.allclose(value, J) and np.allclose(grad_by_compiler, grad_by_hand, rtol=1e-12)

# %% [markdown]
# ## The backward graph
#
# `C.grad_graph` is the transformation behind `C.grad`: it copies the forward nodes and
# appends, walking them in reverse, each node's vector-Jacobian product — the local
# derivative times the gradient that arrives from above. Nothing is computed yet: this is a
# program.
#
# **What you should see** in the picture (forward faded, backward orange): the dotted seed
# edge (∂loss/∂loss = 1: here the loss is J) leaves the loss into `neg (1.0)` — the seed times
# the derivative of the final minus. From
# there *two* paths run back to y — one through `log(y)`, one through `log(1 − y)` — each a
# `mul` and a `div` (the log's 1/u; the path through 1 − y has one more node, a `neg`, since
# d(1 − y)/dy = −1), and they meet in the **Σ** node: y is read twice, so its gradient is the
# sum of two terms. Then the sigmoid's derivative is two `mul`s (by y, and by
# 1 − y, which the backward recomputes with its own `sub (1.0)`), a `reshape` and an `expand`
# (the gradient of a sum hands the same value to every term), and a last `mul` by x. The
# dashed edges are forward values the backward reads (y, 1 − y, y*, 1 − y*, x): they must
# stay in memory until then.

# %%
joint = C.grad_graph(forward, argnums=(0,))
print(joint)
tut.show(joint, "backward")

# %% [markdown]
# ## Node by node
#
# Now run the joint program on our numbers (the NumPy reference executor keeps every
# intermediate value) and put each backward node next to the quantity of the hand
# derivation it computes. The table is built from the graph, so the names (t11, t12, ...)
# are the ones printed above.

# %%
values = run_graph_values(joint, [theta, x, y_true])
names = value_names(joint)
by_name = {names[node]: node for node in joint.nodes}
meaning = {          # node of the printed joint program -> (what it is, its value by hand)
    "t11": ("∂J/∂(the sum in the brackets)  = −1", -1.0),
    "t12": ("∂J/∂log(1−y)                   = −(1 − y*)", -(1 - y_true)),
    "t13": ("∂J/∂(1−y)                      = −(1 − y*)/(1 − y)", -(1 - y_true) / (1 - y)),
    "t14": ("∂J/∂y, path through 1 − y      = (1 − y*)/(1 − y)", (1 - y_true) / (1 - y)),
    "t15": ("∂J/∂log(y)                     = −y*", -y_true),
    "t16": ("∂J/∂y, path through log(y)     = −y*/y", -y_true / y),
    "t17": ("Σ: ∂J/∂y                        = (y − y*)/(y(1 − y))", dJ_dy),
    "t18": ("∂J/∂y · y", dJ_dy * y),
    "t19": ("1 − y (recomputed)", 1 - y),
    "t20": ("∂J/∂z                          = y − y*", y - y_true),
    "t21": ("∂J/∂z as a vector of one", [y - y_true]),
    "t22": ("∂J/∂(θᵢ xᵢ) for each i          = y − y*", np.full(3, y - y_true)),
    "t23": ("∂J/∂θ                          = (y − y*) · x", grad_by_hand),
}
backward_nodes = [n for n in joint.nodes if n.role == "backward" and n.op != "const"]
assert [names[n] for n in backward_nodes] == list(meaning), "the joint program changed: update the table"
for node in backward_nodes:
    name = names[node]
    what, by_hand = meaning[name]
    got = values[node]
    assert np.allclose(got, by_hand, rtol=1e-12), (name, got, by_hand)
    shown = np.array2string(np.asarray(got) + 0.0, precision=4)      # + 0.0: no "-0."
    print(f"{node_code(node, names):<31} = {shown:<26} {what}")

# %% [markdown]
# Every node agrees with the hand derivation. Two things to notice:
#
# * **The Σ node is the fan-out rule.** y has two readers, so ∂J/∂y is the sum of what each
#   sends back. With y* = 1 the path through 1 − y carries exactly 0 (its factor is 1 − y*);
#   with y* = 0 it would be the other way round.
# * **The compiler never simplifies (y − y*)/(y(1 − y)) · y · (1 − y) to y − y*.** It applies
#   the chain rule mechanically, node by node, and so computes the division and then the two
#   multiplications that undo it. The result is the same number — here.
#
# The same graph with each backward node's name and value written into its box (forward
# nodes blue, backward orange; the Σ is t17, and t22's three equal entries are the sum's
# gradient handed to each of its three terms):

# %%
notes = {}
for node in backward_nodes:
    name = names[node]
    shown = np.array2string(np.asarray(values[node]) + 0.0, precision=3)
    notes[node] = {"text": f"{name} = {shown}"}
    if FANOUT_SUM in node.scope:          # the Σ circle, drawn as a box big enough for its note
        notes[node].update(shape="box", fixedsize="false", fontsize="10")
for node, user_name in zip(joint.inputs, ("theta", "x", "y_true")):
    notes[node] = {"text": f"({user_name})"}
tut.show(values_dot(joint, notes, title="the backward nodes with their values (y* = 1)"), "node_by_node")

# %% [markdown]
# ## When the factors do not cancel numerically
#
# Make the model very sure and very wrong: z = 20 and y* = 0. In float32, σ(20) rounds to
# exactly 1.0, so 1 − y = 0: log(1 − y) is −∞ and the backward's (1 − y*)/(1 − y) is 1/0. The
# hand formula says the gradient is simply (1 − 0) · x = x. The compiler's graph computes
# ∞ · 0 on the way:

# %%
sure_theta = np.array([10.0, 5.0, 0.0], np.float32)
sure_x = np.array([1.0, 2.0, 3.0], np.float32)
sure_label = np.float32(0.0)
sure_loss, (sure_grad,) = C.value_and_grad(loss, argnums=(0,), backend="reference")(sure_theta, sure_x, sure_label)
print(f"float32: J = {sure_loss}, ∂J/∂θ = {sure_grad}   (by hand: ∂J/∂θ = {(1.0 - sure_label) * sure_x})")
assert np.isinf(sure_loss) and np.all(np.isnan(sure_grad))

# %% [markdown]
# Not a number: one saturated example would poison a whole batch's gradient. The cure is to
# do the cancellation yourself, in the *loss*: write J as a function of the logit z, not of
# the probability y. (`O.binary_cross_entropy` clamps each log at −100, as torch does, which
# keeps the loss finite but not this gradient; torch adds `binary_cross_entropy_with_logits`
# for this reason.) That is Exercise 3.
#
# ## A batch, through the generated kernels
#
# For N examples in the rows of a matrix X, the loss is the mean of the N per-example
# losses, so the gradient is the mean of the N per-example gradients:
#
#     ∂J/∂θ = (1/N) Σₙ (yₙ − y*ₙ) · xₙ = Xᵀ (y − y*) / N
#
# Here is a data set of two overlapping clouds of points, with a column of ones prepended.

# %%
points, labels = blobs(n=64, centers=[[-1.5, -1.0], [1.5, 1.0]], std=1.0, seed=0)
X = np.concatenate([np.ones((len(points), 1), np.float32), points], axis=1)
targets = labels.astype(np.float32)


def batch_loss(theta, X, y_true):
    return O.binary_cross_entropy(O.sigmoid(X @ theta), y_true)


step = C.compile(batch_loss, O.spec((3,)), O.spec(X.shape), O.spec(targets.shape), grad_argnums=(0,))
print(f"backend: {step.backend};  {step.report()['kernels']} kernels (one per node would be "
      f"{step.report()['unfused_kernels']})")
for filename, _ in step.compiled.files():
    print("  ", filename)

# %% [markdown]
# Three kernels: `X @ θ`; one fused kernel that computes the sigmoid, the loss, its mean *and*
# the backward down to ∂J/∂z for every example; and the backward matmul Xᵀ · ∂J/∂z. The end of
# the fused kernel is the chain rule you derived, one line of Triton per backward node — the
# Σ node, then the two multiplications of the sigmoid's derivative, then the stores of the
# loss and of ∂J/∂z (one number per example, which the next kernel multiplies by Xᵀ):

# %%
assert step.report()["kernels"] == 3
names_in_kernels = value_names(step.graph)
sigma_node = next(n for n in step.graph.nodes if FANOUT_SUM in n.scope)
dJ_dz_node = step.schedule.kernels[1].nodes[-1]          # the fused kernel's last node
fused_file, fused_source = step.compiled.files()[1]
tut.show_code(fused_source, start=f"# {names_in_kernels[sigma_node]} = ",
              end=f"tl.store({names_in_kernels[dJ_dz_node]}_ptr", title=fused_file)

# %% [markdown]
# And the backward matmul does not transpose X: it reads X through swapped strides (a *view*),
# as its header says:

# %%
tut.show_code(step.compiled.files()[2][1], start="computes:", end="writes:", title=step.compiled.files()[2][0])

# %% [markdown]
# The compiled gradient equals the formula Xᵀ (y − y*) / N (float32, so to about 1e-6):

# %%
theta0 = np.zeros(3, np.float32)
_, (compiled_grad,) = step(theta0, X, targets)
probabilities = 1 / (1 + np.exp(-(X @ theta0)))
formula_grad = X.T @ (probabilities - targets) / len(X)
print("compiled:", np.array2string(compiled_grad, precision=6))
print("formula: ", np.array2string(formula_grad, precision=6))
assert np.allclose(compiled_grad, formula_grad, atol=1e-6)

# %% [markdown]
# ## Training
#
# Gradient descent with learning rate 0.5, 60 steps, each step one call of the three kernels.
# **What you should see:** the loss falls fast from log 2 ≈ 0.693 (θ = 0 predicts 0.5 for
# everyone) and then slowly. The decision boundary θ₀ + θ₁ x₁ + θ₂ x₂ = 0 is roughly in place
# after a single step — that step, −η · Xᵀ(½ − y*)/N, turns θ from the blue cloud towards the
# red one — and later steps only turn and shift it a little. The loss keeps falling
# anyway, because θ keeps growing: the same line, drawn more confidently (σ(θ·x) closer to
# 0 or 1 on each side), costs less.

# %%
learning_rate, steps = 0.5, 60
theta_now = theta0.copy()
losses, snapshots = [], {}
for k in range(steps + 1):
    value, (gradient,) = step(theta_now, X, targets)
    losses.append(float(value))
    if k in (1, 5, steps):
        snapshots[k] = theta_now.copy()
    theta_now = theta_now - learning_rate * gradient
accuracy = float(np.mean(((X @ snapshots[steps]) > 0) == (labels == 1)))
print(f"loss: {losses[0]:.4f} -> {losses[-1]:.4f};  training accuracy {accuracy:.2f}")
for k, th in snapshots.items():
    print(f"after {k:>2} steps: θ = {np.array2string(th, precision=3)},  |θ| = {np.linalg.norm(th):.2f}")
assert abs(losses[0] - np.log(2)) < 1e-6 and losses[-1] < 0.3
norms = [np.linalg.norm(th) for th in snapshots.values()]
assert norms[0] < norms[1] < norms[2]

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
left.scatter(points[:, 0], points[:, 1], c=labels, cmap="coolwarm", edgecolors="k", s=25)
grid = np.linspace(-4.5, 4.5, 2)
for (k, th), shade in zip(snapshots.items(), ("0.75", "0.5", "0.0")):
    left.plot(grid, -(th[0] + th[1] * grid) / th[2], color=shade, label=f"after {k} step{'s' if k > 1 else ''}")
left.set_xlim(-4.5, 4.5)
left.set_ylim(-4.5, 4.5)
left.set_title("decision boundary θ · x = 0")
left.legend()
right.plot(losses)
right.set_xlabel("step")
right.set_ylabel("J (mean binary cross-entropy)")
right.set_title("training loss")
tut.show(fig, "training")

# %% [markdown]
# ## Exercises
#
# Each exercise has a reference answer filled in; change it to your own and rerun the cell —
# the check tells you whether it is right.
#
# **Exercise 1.** A new example: x = [1, −1, 3], label y* = 0, and the same θ as above. Use the
# hand formula (y − y*) · x — compute y yourself with NumPy. The check compares with
# chainrule's gradient.

# %%
new_x, new_label = np.array([1.0, -1.0, 3.0]), np.float64(0.0)
new_y = 1 / (1 + np.exp(-(theta @ new_x)))
answer_1 = (new_y - new_label) * new_x                   # your answer here
tut.check(1, "∂J/∂θ for x = [1, -1, 3], y* = 0", got=answer_1,
          want=C.grad(loss, argnums=0, backend="reference")(theta, new_x, new_label), tol=1e-10,
          hint="y = σ(θ·x), and the gradient is (y − y*)·x")

# %% [markdown]
# **Exercise 2.** For that example, which node of the printed joint program holds ∂J/∂z, the
# gradient at the logit? Give its name (like `"t7"`); the check runs the joint program on the
# new example and compares that node's value with y − y*.

# %%
answer_2 = "t20"                                          # your answer here
new_values = run_graph_values(joint, [theta, new_x, new_label])
tut.check(2, "the node that holds ∂J/∂z", got=float(new_values[by_name[answer_2]]), want=new_y - new_label,
          hint="it comes right after the sigmoid's two multiplications, before the reshape")

# %% [markdown]
# **Exercise 3.** Write the loss as a function of the logit so that no ∞ or 0/0 can appear:
#
#     J = max(z, 0) − z · y* + log(1 + e^(−|z|))
#
# (equal to the cross-entropy above for every z; check it for z > 0 and z < 0). Let chainrule
# differentiate it: the check runs the saturated float32 example (z = 20, y* = 0), whose
# gradient must now be (y − y*) · x = x.

# %%
def stable_loss(theta, x, y_true):                        # your answer here
    z = O.sum(theta * x)
    return O.relu(z) - z * y_true + O.log(1 + O.exp(-O.abs(z)))


stable_value, (stable_grad,) = C.value_and_grad(stable_loss, argnums=(0,))(sure_theta, sure_x, sure_label)
tut.check(3, "the saturated example's gradient is finite and equals x", got=stable_grad, want=sure_x, tol=1e-6)
tut.check(3, "and the loss agrees with the cross-entropy on the first example",
          got=C.jit(stable_loss, backend="reference")(theta, x, y_true), want=J, tol=1e-12)

# %% [markdown]
# This is the form `O.binary_cross_entropy_with_logits(z, y)` computes (torch's
# `F.binary_cross_entropy_with_logits`): use it whenever the model's last layer is a sigmoid.

# %%
library_loss = lambda theta, x, y_true: O.binary_cross_entropy_with_logits(O.sum(theta * x), y_true)
_, (library_grad,) = C.value_and_grad(library_loss, argnums=(0,))(sure_theta, sure_x, sure_label)
assert np.allclose(library_grad, stable_grad, rtol=1e-6)

# %%
tut.done()
