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
# # 5. A CNN on the digits
#
# Tutorial 4 took convolution and pooling apart. Here we stack them into a small LeNet-style
# network and train it to read handwritten digits:
#
#     Conv → ReLU → Pool → Conv → ReLU → Pool → Flatten → Dense → ReLU → Dense
#
# You will
#
# * count the network's parameters by hand and check the count against `summary()`,
# * train it with `runtime.training.loop.fit` — forward, backward and the Adam update compiled into
#   one program of generated kernels,
# * read its learning curves,
# * see *which* digits it mistakes for which (the confusion matrix) and put numbers on it
#   (precision, recall, F1 per class).
#
# Run it as a script (`python tutorials/05_cnn_digits.py`) or open it as a notebook. Pictures go
# to `tutorials/out/05_cnn_digits/`. Training takes about half a minute on two CPU cores.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

import compiler as C
import ops as O
from ops import layers as L
from runtime.training import metrics
from runtime.training.curves import plot_learning_curves
from runtime.training.data import digits_split
from runtime.training.loop import fit
from runtime.tutorial import Tutorial

tut = Tutorial("05_cnn_digits")

# %% [markdown]
# ## The data
#
# The 1,797 digits that ship with scikit-learn: 8×8 grey images, values scaled to [0, 1], one
# channel. `digits_split` shuffles them and cuts them into a training set (to learn from), a
# validation set (to watch while training) and a test set (looked at once, at the end), with
# every class in the same proportion in each part.

# %%
data = digits_split(seed=0, image=True)
x_train, y_train = data["train"]
x_test, y_test = data["test"]
for part, (x, y) in data.items():
    print(f"{part:5}  x {x.shape} {x.dtype}   y {y.shape} {y.dtype}   examples per class: {np.bincount(y)}")

fig, axes = plt.subplots(2, 10, figsize=(10, 2.4))
for digit in range(10):
    examples = np.flatnonzero(y_train == digit)[:2]
    for row, index in enumerate(examples):
        axes[row, digit].imshow(x_train[index, 0], cmap="gray_r")
        axes[row, digit].set_xticks([])
        axes[row, digit].set_yticks([])
    axes[0, digit].set_title(str(digit))
fig.suptitle("two training images of each digit (8 × 8 pixels)", y=1.06)
tut.show(fig, "digits")

# %% [markdown]
# ## The network
#
# Two convolution blocks find local patterns (strokes, corners) and halve the image each time;
# two dense layers turn the 64 numbers that are left into 10 scores, one per digit. The
# convolutions use 3×3 kernels with padding 1, so they keep the image size; each 2×2 max pooling
# halves it: 8×8 → 4×4 → 2×2.

# %%
model = L.Sequential(
    L.Conv2d(1, 6, 3, padding=1), L.ReLU(), L.MaxPool2d(2),
    L.Conv2d(6, 16, 3, padding=1), L.ReLU(), L.MaxPool2d(2),
    L.Flatten(), L.Dense(64, 84), L.ReLU(), L.Dense(84, 10),
    input_shape=(1, 8, 8)).init(seed=0)

# %% [markdown]
# ### Counting the parameters by hand
#
# * A convolution with `c_in` input channels, `c_out` output channels and a k×k kernel has one
#   k×k filter per (output, input) pair, plus one bias per output channel:
#   `c_out · c_in · k · k + c_out`.
# * A dense layer from `n_in` to `n_out` features has a weight per pair and a bias per output:
#   `n_out · n_in + n_out`.
# * ReLU, pooling and flatten have no parameters.
#
# The input of the first dense layer is what flatten leaves: 16 channels of 2×2 = 64 features.
# The sizes follow out = (n + 2·padding − k) / stride + 1 (rounded down), for the convolutions
# (k = 3, padding 1, stride 1: the size stays) and for the poolings (k = 2, stride 2: it halves).

# %%
def conv_params(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


def dense_params(n_in, n_out):
    return n_out * n_in + n_out


def out_size(n, k, padding=0, stride=1):
    return (n + 2 * padding - k) // stride + 1


sizes = [8]
for k, padding, stride in [(3, 1, 1), (2, 0, 2), (3, 1, 1), (2, 0, 2)]:      # conv, pool, conv, pool
    sizes.append(out_size(sizes[-1], k, padding, stride))
print("image size through the layers:", " → ".join(map(str, sizes)))
flat_features = 16 * sizes[-1] * sizes[-1]
by_hand = {"conv2d": conv_params(1, 6, 3), "conv2d_1": conv_params(6, 16, 3),
           "dense": dense_params(flat_features, 84), "dense_1": dense_params(84, 10)}
# multiply-adds per image: a convolution does c_in·k·k of them for each of its output values
multiply_adds = {"conv2d": 6 * sizes[1] ** 2 * (1 * 3 * 3), "conv2d_1": 16 * sizes[3] ** 2 * (6 * 3 * 3),
                 "dense": 84 * flat_features, "dense_1": 10 * 84}
print(f"{'layer':10} {'params':>7} {'multiply-adds per image':>25}")
for name, count in by_hand.items():
    print(f"{name:10} {count:7,} {multiply_adds[name]:25,}")
print(f"{'total':10} {sum(by_hand.values()):7,} {sum(multiply_adds.values()):25,}")

# %% [markdown]
# Now the model's own account. `summary()` prints each layer's output shape (None stands for the
# batch, whatever its size) and its parameter count, like Keras:

# %%
print(model.summary())
counted = {layer.name: layer.num_parameters() for layer in model if layer.num_parameters()}
assert counted == by_hand and model.num_parameters() == sum(by_hand.values()) == 7250
shape, sizes_by_model = (1, 8, 8), [8]
for layer in model:                       # each layer's own shape rule, as summary() uses it
    shape = layer.output_shape(shape)
    if isinstance(layer, (L.Conv2d, L.MaxPool2d)):
        sizes_by_model.append(shape[1])
assert sizes_by_model == sizes
conv_share = (multiply_adds["conv2d"] + multiply_adds["conv2d_1"]) / sum(multiply_adds.values())
assert by_hand["dense"] / 7250 > 0.75 and conv_share > 0.5
print("the hand count agrees with summary(), layer by layer:", counted)
print(f"the first dense layer holds {by_hand['dense'] / 7250:.0%} of the parameters; "
      f"the convolutions do {conv_share:.0%} of the multiply-adds")

# %% [markdown]
# **What you should see:** the same four numbers (60, 880, 5,460, 850) and 7,250 parameters in
# all; three quarters of them sit in the first dense layer, although the convolutions do most of
# the arithmetic (the table's last column): a filter's few weights are used again at every
# pixel. The output shapes are the sizes computed by hand: 8 → 8 → 4 → 4 → 2.
#
# The traced forward program, each layer drawn as one box with the number of primitives inside
# (`collapse=1`; the last layer's bias `add` is the program's output, so it stands on its own).
# The parameters enter where they are used:

# %%
def lenet_logits(conv_w, conv_b, conv1_w, conv1_b, dense_w, dense_b, dense1_w, dense1_b, images):
    logits, _ = model.apply([conv_w, conv_b, conv1_w, conv1_b, dense_w, dense_b, dense1_w, dense1_b], [], images,
                            training=False)
    return logits


forward = C.trace(lenet_logits, *[O.spec(array.shape) for _, array in model.parameters()], O.spec((64, 1, 8, 8)))
tut.show(forward, "forward_by_layer", collapse=1)

# %% [markdown]
# ## Training
#
# `fit` compiles one training step — forward, backward by the chain rule, and the Adam update of
# every parameter — into a single program, then runs it on shuffled mini-batches of 64 images.
# After each epoch it measures the loss and the accuracy on the validation set, and at the end it
# goes back to the weights of the best epoch and measures the test set. Without a GPU the
# generated Triton kernels run under Triton's interpreter, so we train for only 4 epochs.

# %%
start = time.perf_counter()
result = fit(model, data, epochs=4, batch_size=64, optimizer="adam", lr=1e-2, seed=0, progress=False)
history, step = result["history"], result["step"]
print(f"trained in {time.perf_counter() - start:.1f} s; best epoch {result['best_epoch']}, "
      f"test accuracy {result['test_accuracy']:.4f}")

# %% [markdown]
# The whole step is a handful of kernels, named after the layers whose nodes they compute: the
# forward's convolution + ReLU pairs and max-poolings, the dense layers, the last layer's bias,
# cross-entropy and its gradient in one kernel, then the backward matmuls and convolutions.
# Each weight's Adam update runs in the epilogue of the kernel that computes the weight's
# gradient (`..._adam_bias_grad`, which also adds up the bias gradient on the way); the biases'
# updates are the `adam` kernels.

# %%
report = step.program.report()
print(f"{report['kernels']} kernels (unfused: {report['unfused_kernels']})")
kernel_files = [name for name, _ in step.program.compiled.files()]
print("\n".join(kernel_files))
assert sum("_adam_bias_grad" in name for name in kernel_files) == 4

# %% [markdown]
# ## Learning curves
#
# One point per epoch: the mean training loss over the epoch's batches (blue) and the loss on
# the validation set after the epoch (red); the right panel the same for accuracy. The dotted
# line and the star mark the epoch with the lowest validation loss, the weights `fit` kept.

# %%
tut.show(plot_learning_curves(history), "learning_curves")
for epoch in range(len(history["loss"])):
    print(f"epoch {epoch + 1}: loss {history['loss'][epoch]:.3f}  val_loss {history['val_loss'][epoch]:.3f}  "
          f"accuracy {history['accuracy'][epoch]:.3f}  val_accuracy {history['val_accuracy'][epoch]:.3f}")
assert all(np.diff(history["loss"]) < 0) and all(np.diff(history["val_loss"]) < 0)
assert history["val_accuracy"][-1] > 0.9 and history["loss"][0] > history["val_loss"][0]

# %% [markdown]
# **What you should see:** both losses fall every epoch and the validation accuracy passes 90 %
# by the last one. The training loss of the first epoch is the highest point, and it sits
# *above* the validation loss: it is averaged over an epoch during which the network was still
# guessing, while the validation loss is measured after the epoch. The curves have not
# flattened yet: more epochs would still help (`chainrule train lenet` trains this network for
# 15). Overfitting would show as a validation loss that turns up while the training loss keeps
# falling.
#
# ## Which digits get confused: the confusion matrix
#
# Accuracy is one number; it hides *what* goes wrong. The confusion matrix counts, for every true
# class (row) and every predicted class (column), how many test images fell there. A perfect
# classifier has everything on the diagonal.

# %%
test_logits = step.evaluate(x_test)
predicted = test_logits.argmax(axis=1)
matrix = metrics.confusion_matrix(predicted, y_test, classes=10)
print(matrix)
assert matrix.sum() == len(y_test) and np.trace(matrix) / len(y_test) == result["test_accuracy"]

fig, ax = plt.subplots(figsize=(5.6, 5))
ax.imshow(matrix, cmap="Blues")
for true in range(10):
    for guess in range(10):
        if matrix[true, guess]:
            colour = "white" if matrix[true, guess] > matrix.max() / 2 else "black"
            ax.text(guess, true, matrix[true, guess], ha="center", va="center", color=colour, fontsize=9)
ax.set_xticks(range(10))
ax.set_yticks(range(10))
ax.set_xlabel("predicted digit")
ax.set_ylabel("true digit")
ax.set_title(f"confusion matrix on the {len(y_test)} test images")
tut.show(fig, "confusion_matrix")

off_diagonal = matrix - np.diag(np.diag(matrix))
most = off_diagonal.max()
print(f"mistakes: {off_diagonal.sum()} of {len(y_test)}; the most frequent ({most} times each): "
      + ", ".join(f"{true} read as {guess}" for true, guess in zip(*np.nonzero(off_diagonal == most))))
said_too_often = int(np.argmax(off_diagonal.sum(axis=0)))     # the column with the most wrong entries
missed_most = int(np.argmax(off_diagonal.sum(axis=1)))        # the row with the most wrong entries
print(f"the column with the most mistakes: {said_too_often} ({off_diagonal[:, said_too_often].sum()} images "
      f"of other digits predicted as {said_too_often})")
print(f"the row with the most mistakes: {missed_most} ({off_diagonal[missed_most].sum()} images of "
      f"{missed_most} predicted as something else)")

# %% [markdown]
# **What you should see:** a dark diagonal — most images of every digit are read correctly —
# and a few scattered counts off it. Read the off-diagonal counts by row and by column: a *row*
# with many of them is a digit the network often misses; a *column* with many is a digit it
# says too often, for images of other digits. The lines under the picture name the most frequent
# confusions and the busiest row and column. The first ten misread images:

# %%
wrong = np.flatnonzero(predicted != y_test)[:10]
fig, axes = plt.subplots(1, len(wrong), figsize=(1.1 * len(wrong), 1.6), squeeze=False)
for ax, index in zip(axes[0], wrong):
    ax.imshow(x_test[index, 0], cmap="gray_r")
    ax.set_title(f"{y_test[index]} → {predicted[index]}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("misread test images: true → predicted", fontsize=10)
tut.show(fig, "mistakes")

# %% [markdown]
# ## Precision, recall and F1
#
# For one class c, count the true positives (images of c predicted as c — the diagonal entry),
# and read the rest of its row and column:
#
# * **precision** = TP / (everything *predicted* as c, the column's sum): when the network says
#   "c", how often is it right?
# * **recall** = TP / (every image that *is* c, the row's sum): of the real c's, how many did it
#   find?
# * **F1** = 2 · precision · recall / (precision + recall), their harmonic mean: high only when
#   both are.
#
# `runtime/training/metrics.py` writes each in a few lines of NumPy (read it); `report` prints them like
# scikit-learn's `classification_report`, with the macro average — the plain mean over the
# classes, so that a small class counts as much as a large one.

# %%
scores = metrics.precision_recall_f1(predicted, y_test, classes=10)
print(metrics.report(predicted, y_test, classes=10))
assert np.mean((scores.precision > 0.9) & (scores.recall > 0.9)) > 0.5

weakest = int(np.argmin(scores.f1))
tp = matrix[weakest, weakest]
print(f"the weakest class by F1 is {weakest}: TP = {tp}, predicted as {weakest}: {matrix[:, weakest].sum()}, "
      f"really {weakest}: {matrix[weakest].sum()}")
print(f"  precision {tp}/{matrix[:, weakest].sum()} = {scores.precision[weakest]:.4f}   "
      f"recall {tp}/{matrix[weakest].sum()} = {scores.recall[weakest]:.4f}   F1 {scores.f1[weakest]:.4f}")
if scores.precision[weakest] < scores.recall[weakest]:
    print(f"  its precision is the lower one: the network says {weakest} too often")
else:
    print(f"  its recall is the lower one: the network misses {weakest}s")

# %% [markdown]
# **What you should see:** most classes have precision and recall above 0.9; the weakest class
# by F1 is spelled out under the table, its precision and recall as fractions of the confusion
# matrix's column and row, and which of the two lets it down. A class can have a high recall and
# a low precision (the network says it too often: a busy column) or the other way round (it
# misses it: a busy row) — the accuracy alone cannot tell these apart.
#
# ## Exercises
#
# Each exercise has a reference answer filled in; change it to your own and rerun the cell —
# the check tells you whether it is right.
#
# **Exercise 1.** LeNet-5 used 5×5 kernels. How many parameters does `Conv2d(6, 16, 5,
# padding=2)` have? (The check builds the layer and asks it.)

# %%
answer_1 = 16 * 6 * 5 * 5 + 16          # your answer here
tut.check(1, "parameters of Conv2d(6, 16, 5, padding=2)", got=answer_1,
          want=L.Conv2d(6, 16, 5, padding=2).num_parameters(),
          hint="one 5×5 filter per (output, input) pair, plus biases")

# %% [markdown]
# **Exercise 2.** Feed the same convolution blocks 16×16 images instead of 8×8. How many
# features come out of `Flatten`, that is, what would the first dense layer's `in_features`
# have to be? (The check asks the layers' shape rules.)

# %%
answer_2 = 16 * 4 * 4                   # your answer here
feature_extractor = L.Sequential(L.Conv2d(1, 6, 3, padding=1), L.ReLU(), L.MaxPool2d(2),
                                 L.Conv2d(6, 16, 3, padding=1), L.ReLU(), L.MaxPool2d(2), L.Flatten())
tut.check(2, "features after Flatten for 16×16 inputs", got=answer_2,
          want=feature_extractor.output_shape((1, 16, 16))[0], hint="each pooling halves the height and the width")

# %% [markdown]
# **Exercise 3.** From the confusion matrix alone (not from `scores`), compute the precision
# of the digit the network says too often (`said_too_often`, the busiest column).

# %%
answer_3 = matrix[said_too_often, said_too_often] / matrix[:, said_too_often].sum()      # your answer here
tut.check(3, f"precision of class {said_too_often}", got=answer_3, want=scores.precision[said_too_often],
          hint="precision divides by a column's sum: everything predicted as that class")

# %%
tut.done()
