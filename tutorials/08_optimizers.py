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
# # 8. Optimizers: SGD, momentum, RMSprop and Adam
#
# Tutorial 1 took steps x ← x − η·f'(x). Real training uses cleverer rules: momentum remembers
# past gradients, RMSprop divides each coordinate's step by the size of its recent gradients,
# Adam does both. In chainrule an optimizer is written with `ops`, like the model, so its
# update is *a graph too*, and it is traced into the same program as the loss and the
# gradients. You will
#
# * see each update rule as a small graph: parameter, gradient and state in; new parameter
#   and new state out,
# * run the four rules on an elongated valley and watch their paths,
# * look at the compiled training step: the update of a weight is the epilogue of the GEMM
#   that computes its gradient, and the updates of all the biases share one launch.
#
# Pictures go to `tutorials/out/08_optimizers/`.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from compiler.render import forward_dot, kernels_dot
from ops import layers as L
from runtime.tutorial import Tutorial

tut = Tutorial("08_optimizers")


def named(fn, names):
    """Give fn's positional arguments these names, so that the traced graph calls its inputs
    by them (compile_train_step does the same for its parameters)."""
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in names])
    return fn


# %% [markdown]
# ## Four update rules
#
# `ops.optim` has the rules with torch's names, arguments and defaults. Every optimizer is
# *pure*: `update(params, grads, state, lr)` returns new parameters and a new state and
# changes nothing, so it can be traced. The state is what the rule remembers between steps:
#
# | rule | update of a parameter p with gradient g | state per parameter |
# |---|---|---|
# | SGD | p ← p − η·g | none |
# | momentum | b ← μ·b + g;  p ← p − η·b | the buffer b |
# | RMSprop | v ← α·v + (1−α)·g²;  p ← p − η·g / (√v + ε) | the square average v |
# | Adam | m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − η·m̂ / (√v̂ + ε) | m and v (and a shared step count t) |
#
# (Adam's m̂ = m / (1 − β₁ᵗ) and v̂ = v / (1 − β₂ᵗ) undo the bias of starting m and v at zero.)
# These are the settings the rest of the tutorial uses:

# %%
optimizers = {
    "SGD": O.optim.SGD(lr=0.02),
    "momentum": O.optim.SGD(lr=0.02, momentum=0.9),
    "RMSprop": O.optim.RMSprop(lr=0.1),
    "Adam": O.optim.Adam(lr=0.3),
}
for name, opt in optimizers.items():
    print(f"{name:9s} {opt!r}")

# %% [markdown]
# ## The update as a graph
#
# Trace the update of one parameter `p` of 3 elements: its inputs are the parameter, its
# gradient, the learning rate and the optimizer's state; its outputs are the new parameter
# and the new state. The learning rate is an *input*, so a schedule can change it without
# recompiling.

# %%
def update_graph(opt, shape=(3,)):
    """The simplified graph of opt's update of one parameter p (an array of `shape`)."""
    state_names = [n.replace(".", "_") for n in opt.state_names(["p"])]

    def update(p, g, lr, *state):
        (new_p,), new_state = opt.update([p], [g], list(state), lr=lr)
        return (new_p, *new_state)

    named(update, ["p", "g", "lr", *state_names])
    state_specs = [O.spec(shape) for _ in opt.slots] + [O.spec(()) for _ in opt.shared]
    return C.simplify(C.trace(update, O.spec(shape), O.spec(shape), O.spec(()), *state_specs))


update_graphs = {name: update_graph(opt) for name, opt in optimizers.items()}
for name, graph in update_graphs.items():
    print(f"{name:9s} {graph.num_ops:2d} nodes; state inputs: {len(graph.inputs) - 3}")
assert update_graphs["SGD"].num_ops == 2 and update_graphs["momentum"].num_ops == 4
print(update_graphs["momentum"])

# %% [markdown]
# Plain SGD is two nodes, `mul(lr, g)` and `sub`. Momentum is four: `mul(0.9, p_momentum_buffer)`, the `add` of the gradient that makes
# the new buffer, `mul(lr, ...)` and the `sub` that makes the new p. Both the new p and the new
# buffer are outputs: the caller feeds the buffer back in at the next step.
#
# Adam's graph is longer. In the picture, inputs are ovals (the parameter `p` green) and the
# outputs amber: the new `p` at the bottom, the new m and v (the two amber `add` nodes: they
# become `p_exp_avg` and `p_exp_avg_sq` at the next step) and the new `step` (`add (1.0)` at the
# top). Dashed boxes group connected nodes of the `adam` scope the optimizer traces them in.
# **What you should see:** two branches from `g`, one for m (`mul (0.1)`, added to `mul (0.9)`
# of `p_exp_avg`) and one for v (`mul` of g by itself, `mul (0.001)`, added to `mul (0.999)` of
# `p_exp_avg_sq`); the step count feeding `pow (0.9)` and `pow (0.999)`, the bias corrections
# β₁ᵗ and β₂ᵗ, computed once, on scalars (`f32[]`); then `sqrt` of v, `div` by √(1 − β₂ᵗ),
# `add (0.00000001)` (the ε), `div` of m by that, `mul` by lr / (1 − β₁ᵗ) and the final `sub`
# from `p`.

# %%
adam_graph = update_graphs["Adam"]
print(adam_graph)
tut.show(forward_dot(adam_graph, params=[adam_graph.inputs[0]], title="Adam's update of one parameter p"),
         "adam_update")

# %% [markdown]
# ## Paths on an elongated valley
#
# The loss surface is a valley, 25 times steeper across (y) than along (x):
#
#     f(x, y) = ½·x² + 12.5·y²,     ∇f = (x, 25·y)
#
# This is what ill-conditioning looks like, and real losses are full of it. One step of
# descent is one function: the gradient by `C.grad` (inside a trace, its backward graph is
# inlined) and then the optimizer's update, traced into the same graph — the "graph
# appended to the step".

# %%
def valley(x, y):
    return 0.5 * x * x + 12.5 * y * y


def descent_step(opt):
    """One step on the valley: the gradient by the chain rule, then opt's update."""
    def step(x, y, *state):
        grad_x, grad_y = C.grad(valley, argnums=(0, 1))(x, y)
        (x, y), state = opt.update([x, y], [grad_x, grad_y], list(state))
        return (x, y, *state)

    return named(step, ["x", "y", *[n.replace(".", "_") for n in opt.state_names(["x", "y"])]])


momentum = optimizers["momentum"]
momentum_step = C.simplify(C.trace(descent_step(momentum), *[O.spec(()) for _ in range(4)]))
print(momentum_step)
halves = [n for n in momentum_step.nodes if n.op == "mul" and any(i.is_scalar_const and i.attrs["value"] == 0.5
                                                                for i in n.inputs)]
assert [n.role for n in halves] == ["forward"]      # 0.5·x and the backward's x·0.5: one node (see below)
sums = [n for n in momentum_step.nodes if n.op == "add" and n.role == "backward"]
assert len(sums) == 2 and all(n.inputs[0] is n.inputs[1] for n in sums)
tut.show(forward_dot(momentum_step, params=momentum_step.inputs[:2],
                     title="one momentum step on the valley: the gradient, then the update"),
         "momentum_step")

# %% [markdown]
# **What you should see:** two copies of the same picture, one per coordinate. `0.5 * x * x` is
# (0.5·x)·x and reads x twice, so ∂f/∂x arrives along two paths: through the first factor,
# ∂/∂(0.5·x) of (0.5·x)·x = x, times 0.5 — that is x·0.5 — and through the second, 0.5·x. The
# backward's x·0.5 is the forward's 0.5·x with its factors swapped; simplify's
# common-subexpression pass knows that `mul` commutes and keeps one node, so the Σ adds the
# forward's `mul (0.5)` to itself: 0.5x + 0.5x = x, the gradient. For y: 12.5y + 12.5y = 25y.
# Below the Σ is the update, four nodes: `mul (0.9)` of the momentum buffer, the `add` that
# makes the new buffer (an output, amber), `mul (0.02)` (the learning rate, baked in as a
# constant here) and the `sub` that makes the new x.
#
# Now run each rule for 100 steps from (−9, 1.5). The steps are compiled once per
# optimizer (`C.jit`); the NumPy reference backend runs them, since the kernels of a graph
# on four scalars are not the point here.

# %%
start, steps = (-9.0, 1.5), 100
paths = {}
for name, opt in optimizers.items():
    run_step = C.jit(descent_step(opt), backend="reference")
    x, y = np.float32(start[0]), np.float32(start[1])
    state = opt.init([x, y])
    path = [(x, y)]
    for _ in range(steps):
        x, y, *state = run_step(x, y, *state)
        path.append((float(x), float(y)))
    paths[name] = np.array(path)
    print(f"{name:9s} first step to ({path[1][0]:6.3f}, {path[1][1]:6.3f})   after {steps} steps: "
          f"({path[-1][0]:7.4f}, {path[-1][1]:7.4f})  f = {valley(*path[-1]):.2g}")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2, 1]})
grid_x, grid_y = np.meshgrid(np.linspace(-10, 3.5, 300), np.linspace(-2.2, 2.2, 200))
left.contour(grid_x, grid_y, valley(grid_x, grid_y), levels=np.logspace(-1.5, 3, 16), colors="0.75",
             linewidths=0.7)
colours = {"SGD": "tab:blue", "momentum": "tab:orange", "RMSprop": "tab:green", "Adam": "tab:red"}
for name, path in paths.items():
    left.plot(path[:, 0], path[:, 1], marker=".", markersize=4, lw=1, color=colours[name], label=name)
    right.plot(valley(path[:, 0], path[:, 1]), color=colours[name], label=name)
left.plot(*start, "ks")
left.plot(0, 0, "k*", markersize=12)
left.set_xlabel("x  (gentle: curvature 1)")
left.set_ylabel("y  (steep: curvature 25)")
left.set_title("100 steps from (−9, 1.5) to the minimum ★")
left.legend(loc="lower right")
right.set_yscale("log")
right.set_xlabel("step")
right.set_title("f(x, y)")
right.legend()
tut.show(fig, "paths")

# %% [markdown]
# **What you should see:**
#
# * **SGD** (blue) drops to the valley floor in a few steps — across the valley each step
#   multiplies y by 1 − 0.02·25 = 0.5 — and then crawls: along the floor each step multiplies
#   x by only 1 − 0.02·1 = 0.98, so after 100 steps x is still −9·0.98¹⁰⁰ ≈ −1.19. A larger
#   learning rate would go faster along x, but above 2/25 = 0.08 the steep direction
#   diverges (exercise 3): the steepest direction sets the speed limit for all of them.
# * **momentum** (orange), same learning rate: the buffer adds up the gradients that keep
#   pointing the same way (with a steady gradient, its step grows to 1/(1 − 0.9) = 10 times
#   SGD's: exercise 1), so it races along the floor. The price is inertia: it swings across
#   the valley and shoots past the minimum to x ≈ 2.7 before it settles.
# * **RMSprop** (green) divides each coordinate's step by the root mean square of its own
#   gradients, so both coordinates move by about the same amount whatever their slope: its
#   first step goes 1.0 in x and 1.0 in y — diagonally, not down the steep side. (That is 10·η:
#   v starts at zero, so after one step √v is only 0.1·|g|.) Along the floor each step then
#   removes about 5 % of the distance left to the minimum, where SGD removes 2 %.
# * **Adam** (red) is momentum plus RMSprop's scaling: its first step is exactly η = 0.3 in
#   each coordinate; then, like momentum, it curves across the valley and overshoots a little.
#
# On the right, f after each step: momentum, RMSprop and Adam reach about 10⁻³ in 100 steps,
# SGD only 0.71. The prose quotes numbers; the next cell checks them on the paths just
# computed.

# %%
sgd, heavy, rms, adam = (paths[k] for k in ("SGD", "momentum", "RMSprop", "Adam"))
rms_factor = np.median(rms[11:, 0] / rms[10:-1, 0])          # x_{t+1} / x_t along the floor
print(f"SGD ends at x = {sgd[-1, 0]:.3f}; momentum reaches x = {heavy[:, 0].max():.2f}; "
      f"RMSprop multiplies x by {rms_factor:.3f} per step along the floor")
assert abs(sgd[-1, 0] - start[0] * 0.98 ** steps) < 1e-3 and abs(sgd[-1, 0] + 1.19) < 0.01
assert abs(heavy[:, 0].max() - 2.7) < 0.1
assert np.allclose(np.abs(rms[1] - rms[0]), [1.0, 1.0], atol=1e-4)
assert abs(rms_factor - 0.95) < 0.01
assert np.allclose(adam[1] - adam[0], [0.3, -0.3], atol=1e-5) and adam[:, 0].max() > 0
final = {name: valley(*path[-1]) for name, path in paths.items()}
assert all(f < 3e-3 for name, f in final.items() if name != "SGD") and abs(final["SGD"] - 0.71) < 0.01
print("the numbers in the text match the paths")

# %% [markdown]
# ## The update inside a compiled training step
#
# Frameworks run `loss.backward()` and then `optimizer.step()`, a separate loop over the
# parameters. `C.compile_train_step` traces the forward, the backward *and* the update into
# one program, so the compiler sees all of it. Take a small MLP on 64 inputs (the digits'
# size) and compile its step with each optimizer; for comparison, compile the loss and
# gradients alone.

# %%
batch = 32


def mlp():
    return L.Sequential(L.Dense(64, 32), L.ReLU(), L.Dense(32, 10), input_shape=(64,)).init(seed=0)


x_spec, y_spec = O.spec((batch, 64)), O.spec((batch,), "int64")
model = mlp()
params = [a for _, a in model.parameters()]


def objective(*args):
    logits, _ = model.apply(list(args[:-2]), [], args[-2], training=True)
    return O.cross_entropy(logits, args[-1])


grads_only = C.compile(objective, *[O.spec(p.shape) for p in params], x_spec, y_spec,
                       grad_argnums=tuple(range(len(params))), backend="interpret")
print(f"loss and gradients only: {grads_only.report()['kernels']} kernels")
train_steps = {}
for name, opt in optimizers.items():
    step = train_steps[name] = C.compile_train_step(mlp(), O.cross_entropy, opt, x_spec, y_spec, backend="interpret")
    kernels = [k.name for k in step.program.schedule.kernels]
    print(f"{name:9s} {len(kernels)} kernels, {len(step.opt_names)} optimizer state arrays: {', '.join(kernels)}")

# %%
kernel_counts = {name: len(step.program.schedule.kernels) for name, step in train_steps.items()}
extra = {name: count - grads_only.report()["kernels"] for name, count in kernel_counts.items()}
print("kernels the update adds:", extra)
assert extra == {"SGD": 1, "momentum": 1, "RMSprop": 1, "Adam": 2}

# %% [markdown]
# The update costs almost no kernels: the step with SGD, momentum or RMSprop has **one**
# kernel more than the loss and gradients alone, and Adam two (its extra `k04_upd_adam` computes
# the scalar bias corrections once for all parameters). Where did the updates go? Here is the
# momentum step's program after the backward (the `sgd` lines), and its kernels:

# %%
momentum_train = train_steps["momentum"].program
program_lines = str(momentum_train.graph).splitlines()
print("\n".join(line for line in program_lines if " sgd " in line))
tut.show(kernels_dot(momentum_train.graph, momentum_train.schedule,
                     title="the momentum training step: every kernel a purple box"), "momentum_kernels")
kernel_names = [k.name for k in momentum_train.schedule.kernels]
assert {"k04_bwd_upd_dense_1_sgd_bias_grad", "k05_bwd_upd_dense_sgd_bias_grad", "k06_upd_sgd"} <= set(kernel_names)

# %% [markdown]
# **What you should see** (bottom row of the picture): `k05_bwd_upd_dense_sgd_bias_grad` holds the
# `matmul` that computes the gradient of `dense.weight` and, in the same box, `mul (0.9)` of
# the momentum buffer, `add`, `mul` by `lr` and `sub` — the whole update. The gradient never
# goes to memory: the update runs on the GEMM's output tile while it is still in registers (an
# *epilogue*), and the `reduce_sum` beside the matmul is the bias gradient, summed from the
# same tiles. `k04_bwd_upd_dense_1_sgd_bias_grad` does the same for `dense_1.weight`. The two bias
# updates are in `k06_upd_sgd`: one launch for both (*sibling* fusion, like PyTorch's
# multi-tensor `foreach` optimizers).
#
# The generated kernel says the same in code: the K loop accumulates the gradient tile `acc`
# (and the bias gradient beside it); after the loop, the epilogue applies momentum to `acc`
# and stores the new buffer and the new weight — `acc` itself is never stored.

# %%
kernel_files = dict(momentum_train.compiled.files())
weight_kernel = next(text for name, text in kernel_files.items() if "dense_sgd_bias_grad" in name)
tut.show_code(weight_kernel, start="acc = tl.zeros", end="# store")

# %% [markdown]
# Why are the bias updates not in an epilogue too? The bias gradient *rides along* the K loop:
# each program sums only the tiles it loads, and the sum is complete only in the first tile of
# each row of tiles — so no epilogue can read it. The fusion pass writes its reasons down
# (`03_fusion.txt` of `Program.dump`):

# %%
fusion_text = momentum_train.compiled.fusion.text()
print("\n".join(line for line in fusion_text.splitlines() if "rides along the matmul's K loop and" in line))

# %% [markdown]
# So the two bias updates are separate pointwise kernels — and since both read `lr`, they
# become siblings in one launch: the first programs update `dense.bias`, the others (the
# `else:` branch) `dense_1.bias`.

# %%
sibling_kernel = next(text for name, text in kernel_files.items() if name.endswith("_sgd.py"))
tut.show_code(sibling_kernel, start="pid = tl.program_id(0)", end="else:")

# %% [markdown]
# One more thing the single program buys: the parameters and the optimizer's state live on the
# device between steps, and each new value is written *over* the old one. The memory plan
# (`04_memory.txt`) says where:

# %%
memory_text = momentum_train.memory.text()
persistent = memory_text[memory_text.index("# the persistent part"):memory_text.index("\n\n")]
print(persistent)
unwrapped = " ".join(persistent.replace("#", " ").split())
assert "8 written in place" in unwrapped and "t49 over dense_weight at step 5" in unwrapped

# %% [markdown]
# All eight carried values — four parameters and four momentum buffers — are written in place:
# `t49`, the new `dense.weight`, goes over `dense_weight` at step 5, which is the kernel
# `k05_bwd_upd_dense_sgd_bias_grad` you read above. Each epilogue lane reads the old weight and buffer
# at exactly the element it then overwrites, so no copy and no second buffer is needed, and
# only the batch and the learning rate travel to the device each step.
#
# ## Exercises
#
# **Exercise 1.** With a gradient that stays the same, momentum's buffer b ← 0.9·b + g grows
# towards a fixed point. By what factor is the step then larger than plain SGD's (b / g)?
# The check feeds a constant gradient to `O.optim.SGD(momentum=0.9).update` 200 times.

# %%
answer_1 = 1 / (1 - 0.9)                          # your answer here
opt = O.optim.SGD(lr=0.01, momentum=0.9)
p, g = np.zeros(1, np.float32), np.ones(1, np.float32)
state = opt.init([p])
for _ in range(200):
    (p,), state = opt.update([p], [g], state)
tut.check(1, "momentum's steady-state factor b / g", got=answer_1, want=float(state[0][0] / g[0]), tol=1e-4,
          hint="at the fixed point b = 0.9·b + g")

# %% [markdown]
# **Exercise 2.** Adam's first step does not depend on the size of the gradient. Starting from
# p = 0 with learning rate 0.1, give the new p after one step with the gradient
# g = [0.001, 5, −200].

# %%
answer_2 = np.array([-0.1, -0.1, 0.1])            # your answer here
adam = O.optim.Adam(lr=0.1)
p0, g0 = np.zeros(3, np.float32), np.array([0.001, 5.0, -200.0], np.float32)
(p1,), _ = adam.update([p0], [g0], adam.init([p0]))
tut.check(2, "p after Adam's first step", got=answer_2, want=p1, tol=1e-4,
          hint="m̂ = g and v̂ = g² after one step, so m̂ / √v̂ is the sign of g")

# %% [markdown]
# **Exercise 3.** Plain SGD on the valley: y is multiplied by 1 − 25·η each step. What is the
# largest learning rate for which it still converges? The check runs the compiled descent
# just below and just above your answer.

# %%
answer_3 = 2 / 25                                 # your answer here


def final_distance(lr, steps=300):
    opt = O.optim.SGD(lr=lr)
    run_step = C.jit(descent_step(opt), backend="reference")
    x, y = np.float32(start[0]), np.float32(start[1])
    for _ in range(steps):
        x, y = run_step(x, y)
    return float(np.hypot(x, y))


below, above = final_distance(answer_3 * 0.97), final_distance(answer_3 * 1.03)
tut.check(3, "just below it SGD converges, just above it diverges", got=below < 1e-2 and above > 10)

# %%
tut.done()
