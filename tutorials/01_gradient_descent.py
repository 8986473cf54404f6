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
# # 1. Gradient descent on f(x) = x²
#
# Everything a deep-learning compiler does serves one loop: compute the derivative of a loss,
# take a step against it, repeat. Here the loss is the simplest there is, f(x) = x², and we
# start at x = 10. You will
#
# * get the derivative f'(x) = 2x from chainrule and see the graph it builds for it,
# * write the update x ← x − η·f'(x) and run it with learning rates η = 0.1, 0.01 and 1.1,
# * see why 0.1 converges, 0.01 crawls and 1.1 blows up — and predict it from one number.
#
# Run it as a script (`python tutorials/01_gradient_descent.py`) or open it as a notebook
# (`jupytext --to notebook tutorials/01_gradient_descent.py`). Pictures go to
# `tutorials/out/01_gradient_descent/`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from runtime.tutorial import Tutorial

tut = Tutorial("01_gradient_descent")

# %% [markdown]
# ## The function and its derivative
#
# In chainrule a function is plain Python over `ops`. `C.trace` runs it once on a *spec*
# (a shape and a dtype, no data) and records every operation as a node of a graph; the graph
# prints as a short program you could run.

# %%
def f(x):
    return x * x


print(C.trace(f, O.spec((), "float64")))

# %% [markdown]
# `C.grad(f)` derives the backward program with the chain rule and returns a function that
# computes f'(x). For `mul(x, x)` the rule is d(x·y) = y·dx + x·dy; both inputs are x, so the
# two contributions are *added* — that sum is the gradient 2x.

# %%
df = C.grad(f)
for x in (10.0, 3.0, -0.5):
    print(f"f'({x}) = {float(df(np.float64(x)))}")

# %% [markdown]
# The backward graph: the forward faded, the backward in orange. The dotted *seed* edge
# leaves the loss with ∂loss/∂loss = 1 and enters two `mul (1.0)` nodes: the seed times each
# partial derivative of `x * x` (∂(a·b)/∂a = b and ∂(a·b)/∂b = a — both are x here; the dashed
# edges are x, saved by the forward for the backward). The two paths meet in the `add` that
# is ∂loss/∂x: whenever a value is used twice, its gradients add up (the "fan-out" sum).

# %%
joint = C.grad_graph(C.trace(f, O.spec((), "float64")), argnums=(0,))
print(joint)
tut.show(joint, "backward")

# %% [markdown]
# The chain rule wrote `mul(1.0, x)` twice: the seed 1 times each partial derivative. The
# simplify pass (constant folding, x·1 = x, common subexpressions) cleans that up before any
# kernel is generated — the gradient is literally `x + x`:

# %%
print(C.simplify(joint))

# %% [markdown]
# ## The update
#
# Gradient descent moves x against the derivative, scaled by the learning rate η:
#
#     x ← x − η · f'(x) = x − η · 2x = (1 − 2η) · x
#
# So for this f every step *multiplies* x by the same factor r = 1 − 2η. We run the update
# through chainrule's gradient, not the formula, and compare with the factor afterwards.

# %%
def descend(lr, steps=40, x0=10.0):
    xs = [x0]
    for _ in range(steps):
        x = xs[-1]
        xs.append(x - lr * float(df(np.float64(x))))
    return np.array(xs)


paths = {lr: descend(lr) for lr in (0.1, 0.01, 1.1)}
for lr, xs in paths.items():
    print(f"lr = {lr:<5}  x after 1, 2, 3 steps: {xs[1]:9.4f} {xs[2]:9.4f} {xs[3]:9.4f}   after 40: {xs[-1]:.3g}")

# %% [markdown]
# ## Convergence and divergence, plotted
#
# Left: x after each step. Right: the same steps drawn on the parabola.
# **What you should see:** with η = 0.1 (r = 0.8) x shrinks geometrically towards 0; with
# η = 0.01 (r = 0.98) it crawls — after 40 steps it is still near 4.5; with η = 1.1
# (r = −1.2) it jumps from side to side of the minimum, each time further out: divergence.

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
colours = {0.1: "tab:green", 0.01: "tab:blue", 1.1: "tab:red"}
for lr, xs in paths.items():
    left.plot(np.abs(xs), marker=".", color=colours[lr], label=f"η = {lr}  (r = {1 - 2 * lr:+.2f})")
left.set_yscale("log")
left.set_xlabel("step")
left.set_ylabel("|x|  (log scale)")
left.set_title("distance to the minimum")
left.legend()
grid = np.linspace(-30, 30, 400)
right.plot(grid, grid ** 2, color="0.6")
for lr, xs in paths.items():
    shown = xs[:8]
    right.plot(shown, shown ** 2, marker="o", color=colours[lr], label=f"η = {lr}")
right.set_xlim(-30, 30)
right.set_ylim(-20, 900)
right.set_title("the first steps on f(x) = x²")
right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
tut.show(fig, "descent")

# %% [markdown]
# ## Exercises
#
# Each exercise has a reference answer filled in; change it to your own and rerun the cell —
# the check tells you whether it is right.
#
# **Exercise 1.** Every step multiplies x by r = 1 − 2η. Using chainrule's derivative (not
# the formula), measure r for η = 0.1 as x₁ / x₀.

# %%
answer_1 = paths[0.1][1] / paths[0.1][0]          # your answer here
tut.check(1, "the factor per step for η = 0.1", got=answer_1, want=1 - 2 * 0.1)

# %% [markdown]
# **Exercise 2.** For which learning rates does the descent converge? It converges when
# |r| = |1 − 2η| < 1. Give the largest η for which it still converges (the boundary).

# %%
answer_2 = 1.0                                     # your answer here
converges = [abs(descend(lr, steps=200)[-1]) < 10.0 for lr in (answer_2 - 0.01, answer_2 + 0.01)]
tut.check(2, "the largest learning rate that converges", got=answer_2, want=1.0,
          hint="solve |1 - 2η| < 1 for η")
tut.check(2, "just below it x shrinks, just above it x grows", got=converges == [True, False])

# %% [markdown]
# **Exercise 3.** How many steps does η = 0.1 need to bring x from 10 to below 10⁻³? Predict
# it from r (the smallest n with 10 · 0.8ⁿ < 10⁻³), then the check runs the descent.

# %%
answer_3 = int(np.ceil(np.log(1e-3 / 10) / np.log(0.8)))     # your answer here
steps_needed = int(np.argmax(np.abs(descend(0.1, steps=100)) < 1e-3))
tut.check(3, "steps from 10 to below 1e-3 with η = 0.1", got=answer_3, want=steps_needed)

# %%
tut.done()
