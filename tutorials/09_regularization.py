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
# # 9. Regularization: weight decay, dropout, early stopping
#
# A network with enough parameters can learn its training set by heart — mistakes included —
# and get *worse* on new data while its training loss keeps falling. That is overfitting, and
# regularization is what we do against it. You will
#
# * build a small training set that overfits and watch the validation loss turn up,
# * add L2 weight decay: one more node in the update, one more path to each weight's
#   gradient, and weights that stay small,
# * add dropout, and see in the backward graph how its mask is kept — and how the backward
#   can instead regenerate it from the seed, so that no mask is saved,
# * stop early with `fit(patience=...)` and keep the best epoch.
#
# Pictures go to `tutorials/out/09_regularization/`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from ops.printer import value_names
from compiler.remat import regenerate_random
from compiler.saved import saved_bytes, saved_report
from ops import layers as L
from compiler.pipeline import compile_kernels
from runtime.executors.triton import TritonExecutor
from runtime.training.curves import plot_learning_curves
from runtime.training.data import batches, digits_split
from runtime.training.loop import EarlyStopping, evaluate, fit
from runtime.tutorial import Tutorial

tut = Tutorial("09_regularization")

# %% [markdown]
# ## A small set that overfits
#
# The digits data set (8×8 images, 10 classes), but only 200 training images, and each of their
# labels redrawn at random with probability 1/4 — real labels are noisy too. The model is an
# MLP with 128 hidden units: about 9,600 parameters for 200 examples, plenty to memorize them.

# %%
digits = digits_split(seed=0)
n_train = 200
x_train, clean_labels = digits["train"][0][:n_train], digits["train"][1][:n_train]
rng = np.random.default_rng(1)
y_train = clean_labels.copy()
relabelled = rng.random(n_train) < 0.25
y_train[relabelled] = rng.integers(0, 10, relabelled.sum())
print(f"{relabelled.sum()} of {n_train} labels redrawn at random, {(y_train != clean_labels).sum()} of them now wrong")
data = {"train": (x_train, y_train), "val": digits["val"], "test": digits["test"]}
print({part: x.shape for part, (x, _) in data.items()})


def mlp(dropout=0.0):
    layers = [L.Dense(64, 128), L.ReLU()] + ([L.Dropout(dropout)] if dropout else []) + [L.Dense(128, 10)]
    return L.Sequential(layers, input_shape=(64,)).init(seed=0)


print(mlp().summary())

# %% [markdown]
# The training loop is `fit`'s (`runtime/training/loop.py`) without early stopping and without going
# back to the best epoch's weights at the end: the compiled
# step (forward, backward and Adam's update in one program) on shuffled mini-batches, then the
# validation loss. We also record the size of the first layer's weights, ‖W‖. The NumPy
# reference backend runs it: the kernels are not the point here, and it is quick.

# %%
epochs, batch_size = 80, 20


def train(model, optimizer):
    """Train for `epochs` epochs; per epoch, the training and validation loss and ‖W‖ of the
    first layer. The same batches, in the same order, as fit(model, data, seed=0)."""
    step = C.compile_train_step(model, O.cross_entropy, optimizer, O.spec((batch_size, 64)),
                                O.spec((batch_size,), "int64"), backend="reference")
    order = np.random.default_rng(0)
    history = {"loss": [], "val_loss": [], "weight_norm": []}
    for _ in range(epochs):
        losses = [step(x, y)[0] for x, y in batches(x_train, y_train, batch_size, seed=order, drop_last=True)]
        history["loss"].append(float(np.mean(losses)))
        history["val_loss"].append(evaluate(step, *data["val"])[0])
        history["weight_norm"].append(float(np.linalg.norm(step.params[0])))
    return step, history


runs = {"no regularization": train(mlp(), O.optim.Adam(lr=1e-2))}
plain = runs["no regularization"][1]
best_epoch = int(np.argmin(plain["val_loss"])) + 1
print(f"training loss: {plain['loss'][0]:.3f} at epoch 1, {plain['loss'][-1]:.4f} at epoch {epochs}")
print(f"validation loss: lowest {min(plain['val_loss']):.3f} at epoch {best_epoch}, "
      f"{plain['val_loss'][-1]:.3f} at epoch {epochs}")
train_accuracy = evaluate(runs["no regularization"][0], x_train, y_train)[1]
print(f"accuracy on its own (partly random) training labels: {train_accuracy:.3f}")

# %%
def plot_runs(runs, title):
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.8))
    for label, (_, history) in runs.items():
        line, = left.plot(range(1, epochs + 1), history["loss"], label=label)
        middle.plot(range(1, epochs + 1), history["val_loss"], color=line.get_color(), label=label)
        right.plot(range(1, epochs + 1), history["weight_norm"], color=line.get_color(), label=label)
    left.set_yscale("log")
    left.set_title("training loss (log scale)")
    middle.set_title("validation loss")
    right.set_title("‖W‖ of the first layer")
    for ax in (left, middle, right):
        ax.set_xlabel("epoch")
    middle.legend()
    fig.suptitle(title, y=1.02)
    return fig


tut.show(plot_runs(runs, "200 digits, a quarter of the labels random"), "overfitting")

# %% [markdown]
# **What you should see:** the training loss falls steadily, to below 0.01 — the network has
# memorized all 200 labels, the random ones too. The validation loss falls for a few epochs,
# bottoms out early (the epoch printed above), then climbs to about twice its lowest value:
# every epoch after the minimum makes the model worse on digits it has not seen. And ‖W‖ keeps
# growing: to be ever more confident about its training labels, the network makes its
# weights larger.

# %%
assert plain["loss"][-1] < 0.01 and train_accuracy == 1.0 and best_epoch < 20
assert plain["val_loss"][-1] > 1.8 * min(plain["val_loss"])
assert plain["weight_norm"][-1] > plain["weight_norm"][best_epoch - 1] > plain["weight_norm"][0]

# %% [markdown]
# ## L2 weight decay
#
# Weight decay adds λ/2·‖w‖² to the loss. Its gradient is λ·w, so the update becomes
#
#     w ← w − η·(g + λ·w) = (1 − η·λ)·w − η·g
#
# — every step first shrinks the weights a little (the "decay"), then follows the gradient.
# torch and chainrule implement it as the optimizer's `weight_decay=`: the term λ·w is added to
# the gradient inside the update, not computed through the loss. One more node in the graph:

# %%
def sgd_update_graph(opt):
    def update(p, g):
        (new_p,), _ = opt.update([p], [g], [])
        return new_p

    return C.simplify(C.trace(update, O.spec((3,)), O.spec((3,))))


print(sgd_update_graph(O.optim.SGD(lr=0.1)))
print(sgd_update_graph(O.optim.SGD(lr=0.1, weight_decay=0.01)))

# %% [markdown]
# With `weight_decay=0.01` the update reads `mul(0.01, p)` and adds it to `g` before the usual
# `mul(0.1, ...)` and `sub`. Both routes give the same gradient — check it on a logistic
# regression: the gradient of the loss plus λ/2·‖w‖², derived by chainrule, is the loss's
# gradient plus λ·w (the largest difference, in float64, is printed).

# %%
weight_decay = 0.01


def logistic(w, x, y):
    return O.cross_entropy(x @ w, y)


def logistic_with_penalty(w, x, y):
    return logistic(w, x, y) + 0.5 * weight_decay * O.sum(w * w)


w = rng.standard_normal((64, 10))
x_few, y_few = digits["train"][0][:32].astype(np.float64), digits["train"][1][:32]
plain_grad = C.grad(logistic, backend="reference")(w, x_few, y_few)
penalty_grad = C.grad(logistic_with_penalty, backend="reference")(w, x_few, y_few)
difference = np.abs(penalty_grad - (plain_grad + weight_decay * w)).max()
print(f"largest difference between the two gradients: {difference:.1e}")
assert difference < 1e-15

# %% [markdown]
# Now train the same network with `Adam(lr=1e-2, weight_decay=1e-2)`. (With Adam the λ·w term
# is added to the gradient and then goes through Adam's scaling like the rest of it, so the
# shrinking per step is not exactly 1 − η·λ; AdamW is the variant that keeps the two apart.)

# %%
runs["weight decay 0.01"] = train(mlp(), O.optim.Adam(lr=1e-2, weight_decay=1e-2))
decayed = runs["weight decay 0.01"][1]
tut.show(plot_runs(runs, "the same network with L2 weight decay"), "weight_decay")
print(f"‖W‖ at epoch {epochs}: {plain['weight_norm'][-1]:.1f} without, {decayed['weight_norm'][-1]:.1f} with weight decay")
print(f"validation loss at epoch {epochs}: {plain['val_loss'][-1]:.3f} without, {decayed['val_loss'][-1]:.3f} with")

# %% [markdown]
# **What you should see:** with weight decay ‖W‖ *shrinks*, from about 16 at initialization
# (printed below) to about 7 within 20 epochs, and stays there. The training loss stalls far
# above zero — large weights are now expensive, so the network can no longer afford to
# memorize the random labels — and the validation loss stays flat instead of climbing.

# %%
initial_norm = float(np.linalg.norm(mlp().parameters()[0][1]))
print(f"‖W‖ at initialization: {initial_norm:.1f}")
assert abs(initial_norm - 16) < 1 and abs(decayed["weight_norm"][19] - 7) < 0.5 and abs(decayed["weight_norm"][-1] - 7) < 0.5
assert decayed["loss"][-1] > 50 * plain["loss"][-1]
assert decayed["val_loss"][-1] < 0.6 * plain["val_loss"][-1]
assert max(decayed["val_loss"][20:]) < 1.3 * min(decayed["val_loss"])

# %% [markdown]
# ## Dropout
#
# In training, dropout zeroes each element with probability p and multiplies the others by
# 1/(1 − p), so the expected value stays the same; in evaluation it is the identity. A network
# that cannot count on any single hidden unit must spread what it knows over many.
#
# The mask comes from `rand(seed)`, a counter-based generator (Philox, the one Triton's
# `tl.rand` implements): element i of the random numbers is a fixed function of (seed, i).
# No state, no history — the same seed gives the same mask, every time:

# %%
drop = C.jit(lambda x, seed: O.dropout(x, p=0.5, training=True, seed=seed), backend="reference")
ones = np.ones((2, 8), np.float32)
print(drop(ones, np.int64(3)))
print("seed 3 again, the same mask:", np.array_equal(drop(ones, np.int64(3)), drop(ones, np.int64(3))))
print("seed 4, another mask:       ", not np.array_equal(drop(ones, np.int64(3)), drop(ones, np.int64(4))))

# %% [markdown]
# The backward needs the mask too: the gradient flows only through the kept elements. Take two
# layers with dropout between them and look at the backward graph.

# %%
def two_layers(w1, w2, x, y, seed):
    hidden = O.relu(x @ w1)
    hidden = O.dropout(hidden, p=0.5, training=True, seed=seed)
    return O.mse_loss(hidden @ w2, y)


specs = [O.spec((8, 16)), O.spec((16, 4)), O.spec((32, 8)), O.spec((32, 4)), O.spec((), "int64")]
dropout_program = C.compile(two_layers, *specs, grad_argnums=(0, 1), backend="interpret")
saved_graph = C.simplify(dropout_program.joint)      # the chain rule's graph, simplified: as autodiff left it
print(saved_graph)
tut.show(saved_graph, "dropout_mask_saved")

# %% [markdown]
# **What you should see:** in the faded forward, `seed` → `rand` → `ge (0.5)`, a `bool[32,16]`
# mask; a dashed edge carries that mask down to the backward's `where (0.0)` (dashed edges are
# values the forward *saves* for the backward). The random numbers themselves (`f32`) are not
# saved, but the mask is — one byte per element, kept in memory from the forward until the
# backward reads it. The saved-values report says so:

# %%
print(saved_report(saved_graph))
names = value_names(saved_graph)          # the names the printed program uses: t3, t4, ...
mask_nodes = [n for n in saved_graph.nodes if n.op in ("rand", "ge") and n.scope[:1] == ("dropout",)]
print("the dropout mask:", [f"{names[n]} = {n.op}" for n in mask_nodes])

# %% [markdown]
# But the mask is a function of the seed, an 8-byte scalar: the backward can *regenerate* it
# instead. That is rematerialization (tutorial 11) in its cheapest case, and chainrule does it
# in every compile: after simplify, `regenerate_random` (`compiler/remat.py`) finds the saved
# values drawn from a seed alone and copies them into the backward, with the `recompute` step
# the remat pass uses. The graph above is what simplify alone leaves; the graph `C.compile`
# runs is `dropout_program.graph`:

# %%
regenerated = dropout_program.graph
assert str(regenerated) == str(regenerate_random(saved_graph))
print(regenerated)
tut.show(regenerated, "dropout_mask_regenerated")

# %% [markdown]
# **What you should see:** the backward (orange) now has its own `rand` and `ge (0.5)`, fed by
# `seed` alone (the dashed edge from `seed`: the backward reads the input, not a value the
# forward computed), and the dashed edge from the forward's mask is gone. The report agrees:
# the mask left the saved values, and the backward reads the 8-byte seed instead.

# %%
print(saved_report(regenerated))
mask_bytes = saved_bytes(saved_graph) - saved_bytes(regenerated)
print(f"saved by the forward: {saved_bytes(saved_graph)} B with the mask, {saved_bytes(regenerated)} B without: "
      f"{mask_bytes} B less (32 × 16 bool)")
assert mask_bytes == 32 * 16

# %% [markdown]
# Is the regenerated mask really the same mask? Run both graphs through the generated kernels
# (Triton's interpreter) on the same inputs: the gradients are equal bit for bit.

# %%
inputs = [rng.standard_normal(s.shape).astype(np.float32) for s in specs[:4]] + [np.array(42, np.int64)]
loss_saved, *grads_saved = TritonExecutor(compile_kernels(saved_graph, "interpret"))(inputs)
regenerating = dropout_program.executor
loss_regen, *grads_regen = regenerating(inputs)
print("loss", loss_saved, loss_regen, "| gradients identical:",
      all(np.array_equal(a, b) for a, b in zip(grads_saved, grads_regen)))
assert all(np.array_equal(a, b) for a, b in zip(grads_saved, grads_regen))

# %% [markdown]
# In the kernels, the forward draws the numbers with `tl.rand(seed, element index)` and the
# backward draws them again in its GEMM's epilogue, with the same seed and the same indices:

# %%
saving = TritonExecutor(compile_kernels(saved_graph, "interpret"))
kernel_files = dict(regenerating.compiled.files())
for name, text in kernel_files.items():
    if "tl.rand(" in text:
        line = next(line for line in text.splitlines() if "tl.rand(" in line)
        print(f"{name:28s} {line.strip()}")
assert sum("tl.rand(" in text for text in kernel_files.values()) == 2


def written_by_first_kernel(executor):
    """The `writes:` list in the header of the executor's first kernel (the forward's)."""
    name, text = executor.compiled.files()[0]
    start = text.index("writes:")
    return name, text[start:text.index('"""', start)].strip()


print("mask saved:      ", *written_by_first_kernel(saving))
print("mask regenerated:", *written_by_first_kernel(regenerating))
mask_name = names[mask_nodes[-1]]          # the ge node: the bool mask
assert mask_name in written_by_first_kernel(saving)[1] and mask_name not in written_by_first_kernel(regenerating)[1]

# %% [markdown]
# The forward kernel `00_matmul_relu_dropout` used to write three arrays; with the mask
# regenerated it no longer writes `t4`. The two it still writes are relu's mask `t1` and the
# dropout output `t6` — the weight gradient of the second layer needs that one. (Relu's mask
# could be recomputed from `t6` too; that is the kind of trade tutorial 11 explores.)

# %% [markdown]
# Now train with a `Dropout(0.5)` layer after the hidden ReLU. The layer keeps its seed as
# model state and returns seed + 1, so every training step draws a new mask with nothing else
# to pass (the compiled step carries the state like the parameters); `step.evaluate` runs
# the model in eval mode, where dropout is the identity. (Its backward regenerates the mask,
# as in the second graph above.)

# %%
dropout_model = mlp(dropout=0.5)
seed_before = int(dropout_model.states()[0][1])
runs["dropout 0.5"] = train(dropout_model, O.optim.Adam(lr=1e-2))
dropout_step, dropped = runs["dropout 0.5"]
steps_taken = epochs * (n_train // batch_size)
print(f"the dropout seed went from {seed_before} to {int(dropout_step.states[0])}: "
      f"{int(dropout_step.states[0]) - seed_before} masks for {steps_taken} steps")
assert int(dropout_step.states[0]) - seed_before == steps_taken
tut.show(plot_runs(runs, "and with dropout"), "dropout")

# %% [markdown]
# **What you should see:** the dropout run's training loss is noisy (each step trains a
# different thinned network) and stays well above the unregularized one. Its validation loss
# reaches its lowest point later, and then it still creeps up — dropout slows memorization
# down here, weight decay stopped it. And dropout does not hold ‖W‖ back at all: it ends a
# little *above* the unregularized run. What dropout restrains is the reliance on any single
# hidden unit, not the size of the weights.

# %%
dropout_best = int(np.argmin(dropped["val_loss"])) + 1
print(f"lowest validation loss: epoch {best_epoch} without, epoch {dropout_best} with dropout")
assert dropout_best > 2 * best_epoch and dropped["val_loss"][-1] > 1.2 * min(dropped["val_loss"])
assert dropped["loss"][-1] > 10 * plain["loss"][-1] and dropped["weight_norm"][-1] > plain["weight_norm"][-1]

# %% [markdown]
# ## Early stopping
#
# The simplest regularizer uses no formula: watch the validation loss, and stop when it has
# not improved for `patience` epochs; then go back to the best epoch's weights. `fit` does
# exactly that (`runtime.training.loop.EarlyStopping` does the counting). Same network, same
# optimizer, same batches as the first run, with `patience=5`:

# %%
log = []
result = fit(mlp(), data, epochs=epochs, batch_size=batch_size, optimizer=O.optim.Adam(lr=1e-2),
             backend="reference", seed=0, patience=5, progress=False, log=log.append)
print("\n".join(log[-3:]))
history = result["history"]
stopped_at = len(history["val_loss"])
print(f"ran {stopped_at} of {epochs} epochs; best epoch {result['best_epoch']}")
assert np.allclose(history["val_loss"], plain["val_loss"][:stopped_at], rtol=1e-6)
assert result["best_epoch"] == best_epoch and stopped_at == best_epoch + 5

# %% [markdown]
# It is the first run, cut short: the validation losses are the same numbers, epoch for epoch
# (the check above compares them), and fit stopped 5 epochs after the lowest one, then put the
# best epoch's weights back. The learning curves `fit` writes (`runtime/training/curves.py`) mark that
# epoch:

# %%
tut.show(plot_learning_curves(history, title=f"fit(patience=5): stopped at epoch {stopped_at}"), "early_stopping")

# %% [markdown]
# **What you should see:** two panels, loss and accuracy, training and validation. The best
# epoch — the lowest validation loss — is marked by a star and a dotted line on both panels;
# after it the validation loss never goes lower, and the curves end 5 epochs later. The
# validation *accuracy* peaked a few epochs earlier: loss and accuracy need not agree on the
# best epoch, so decide which one you watch (`EarlyStopping(mode="max")` watches an accuracy).

# %%
assert min(history["val_loss"][best_epoch:]) > history["val_loss"][best_epoch - 1]
assert int(np.argmax(history["val_accuracy"])) + 1 < best_epoch

# %% [markdown]
# ## What each one bought
#
# Accuracy on the test digits (none of them seen in training, all correctly labelled), for the
# weights at the end of each run — and, for early stopping, at the restored best epoch:

# %%
print(f"{len(data['test'][1])} test digits")
test_accuracy = {label: evaluate(step, *data["test"])[1] for label, (step, _) in runs.items()}
test_accuracy["early stopping"] = result["test_accuracy"]
for label, accuracy in test_accuracy.items():
    print(f"{label:20s} {accuracy:.3f}")
assert all(test_accuracy[label] > test_accuracy["no regularization"] for label in test_accuracy
           if label != "no regularization")

# %% [markdown]
# Every remedy beats the memorizing network. The ranking among them on this small, noisy set is
# not a law: change λ, p or the patience and it changes.
#
# ## Exercises
#
# **Exercise 1.** With SGD, learning rate η = 0.1 and weight decay λ = 0.01, a weight whose
# loss gradient is zero is multiplied by a fixed factor every step. Give the factor; the check
# runs `O.optim.SGD(lr=0.1, weight_decay=0.01).update` with a zero gradient.

# %%
answer_1 = 1 - 0.1 * 0.01                         # your answer here
opt = O.optim.SGD(lr=0.1, weight_decay=0.01)
w_before = np.array([2.0, -3.0, 0.5], np.float32)
(w_after,), _ = opt.update([w_before], [np.zeros(3, np.float32)], [])
tut.check(1, "the decay factor per step (applied to w)", got=answer_1 * w_before, want=w_after, tol=1e-6,
          hint="w ← w − η·(g + λ·w) with g = 0")

# %% [markdown]
# **Exercise 2.** A `Dropout` between two layers whose activation is `[256, 512]`: how many
# bytes does regenerating the mask in the backward save? (The mask is a `bool` array.) The
# check compiles such a step and measures the saved bytes with and without the mask.

# %%
answer_2 = 256 * 512                              # your answer here


def wide(w1, w2, x, y, seed):
    hidden = O.dropout(O.relu(x @ w1), p=0.3, training=True, seed=seed)
    return O.mse_loss(hidden @ w2, y)


wide_program = C.compile(wide, O.spec((16, 512)), O.spec((512, 8)), O.spec((256, 16)), O.spec((256, 8)),
                         O.spec((), "int64"), grad_argnums=(0, 1), backend="reference")
mask_kept = C.simplify(wide_program.joint)        # before regenerate_random: the mask is saved
tut.check(2, "bytes the regenerated mask saves", got=answer_2,
          want=saved_bytes(mask_kept) - saved_bytes(wide_program.graph))

# %% [markdown]
# **Exercise 3.** An `EarlyStopping(patience=3)` sees these validation losses, one per epoch.
# At which epoch does it stop (`step` returns True)? Epochs count from 1.

# %%
val_losses = [1.0, 0.8, 0.7, 0.72, 0.69, 0.71, 0.73, 0.75, 0.74, 0.66]
answer_3 = 8                                      # your answer here
stopper = EarlyStopping(patience=3)
stop_epoch = next(epoch for epoch, value in enumerate(val_losses, 1) if stopper.step(value))
tut.check(3, "the epoch early stopping stops at", got=answer_3, want=stop_epoch,
          hint="the best is 0.69 at epoch 5; count the epochs without improvement after it")

# %%
tut.done()
