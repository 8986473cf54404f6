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
# # 4. Convolution and pooling
#
# A convolution slides a small kernel of weights along a signal or over an image and takes a
# weighted sum at every position; pooling slides a window and keeps its max or its average.
# They are the two operations of a convolutional network. You will
#
# * work a 1-D convolution by hand, and see that deep learning's "convolution" is really a
#   *cross-correlation* — and when the difference matters,
# * derive its two gradients (with respect to the signal and to the kernel) and find them in
#   chainrule's backward graph as two more convolutions,
# * see what stride and padding do to the output's size,
# * detect edges in images with hand-made kernels (an edge detector and Sobel),
# * pool, differentiate the pooling, and see why max pooling sends the whole gradient of a
#   window to a single cell.
#
# Pictures go to `tutorials/out/04_convolution_pooling/`.

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.ndimage import zoom
from scipy.signal import convolve2d, correlate2d
from sklearn.datasets import load_digits

import compiler as C
import ops as O
from runtime.tutorial import Tutorial

tut = Tutorial("04_convolution_pooling")

# %% [markdown]
# ## A 1-D convolution by hand
#
# The signal x = [5, 3, 7, 5, 9, 7] and the kernel w = [1, 2, 3]. Put the kernel under the
# first three values, multiply element by element, add; move one step right; repeat. Six
# values and a kernel of three give 6 − 3 + 1 = 4 positions:
#
#     position 0:  5·1 + 3·2 + 7·3 = 32
#     position 1:  3·1 + 7·2 + 5·3 = 32
#     position 2:  7·1 + 5·2 + 9·3 = 44
#     position 3:  5·1 + 9·2 + 7·3 = 44
#
# That is y[i] = Σₖ x[i + k] · w[k], the **cross-correlation** of x and w. The convolution of
# mathematics and signal processing flips the kernel first, y[i] = Σₖ x[i + k] · w[K − 1 − k],
# so it slides [3, 2, 1] instead: 5·3 + 3·2 + 7·1 = 28, and so on.

# %%
signal = np.array([5, 3, 7, 5, 9, 7], np.float32)
kernel = np.array([1, 2, 3], np.float32)
positions = len(signal) - len(kernel) + 1
cross_correlation = np.array([sum(signal[i + k] * kernel[k] for k in range(3)) for i in range(positions)])
true_convolution = np.array([sum(signal[i + k] * kernel[2 - k] for k in range(3)) for i in range(positions)])
print("cross-correlation (kernel as is):  ", cross_correlation)
print("convolution       (kernel flipped):", true_convolution)
assert list(cross_correlation) == [32, 32, 44, 44] and list(true_convolution) == [28, 28, 40, 40]
assert np.array_equal(true_convolution, np.convolve(signal, kernel, mode="valid"))
assert np.array_equal(cross_correlation, np.correlate(signal, kernel, mode="valid"))

# %% [markdown]
# Which does a deep-learning framework compute? `O.conv2d`, like `torch.nn.functional.conv2d`,
# works on tensors [batch, channels, height, width] with kernels [out channels, in channels,
# kernel height, kernel width]; a 1-D signal is an image one pixel high. It computes the
# **cross-correlation** — and the true convolution when you flip the kernel yourself:

# %%
def conv(x, w):
    return O.conv2d(x, w)


as_image = signal.reshape(1, 1, 1, 6)                  # [batch, channels, height, width]
as_kernel = kernel.reshape(1, 1, 1, 3)                 # [out channels, in channels, height, width]
conv_compiled = C.jit(conv)
by_chainrule = conv_compiled(as_image, as_kernel).ravel()
by_chainrule_flipped = conv_compiled(as_image, as_kernel[..., ::-1].copy()).ravel()
print("O.conv2d(x, [1, 2, 3]):", by_chainrule)
print("O.conv2d(x, [3, 2, 1]):", by_chainrule_flipped)
assert np.array_equal(by_chainrule, cross_correlation) and np.array_equal(by_chainrule_flipped, true_convolution)

# %% [markdown]
# For a network it makes no difference: the kernel is learned, and a learned kernel is just as
# happy to be learned flipped. It matters when you take a kernel from a textbook of image
# processing, written for the flipped convolution — an antisymmetric one such as Sobel's then
# computes the *negative* of what the book says (below).
#
# ## The gradients of a convolution
#
# Say the loss L receives y and sends back g = ∂L/∂y. Each y[i] is a sum of products, so
#
#     ∂L/∂w[k] = Σᵢ g[i] · x[i + k]          the cross-correlation of x with g
#     ∂L/∂x[j] = Σᵢ g[i] · w[j − i]          the *full* convolution of g with w (kernel flipped!)
#
# "Full" because every x[j] that some window touched gets a gradient: 4 + 3 − 1 = 6 of them.
# Take g = [1, 0, 0, 0] (only y[0] matters): ∂L/∂x is then the kernel itself, [1, 2, 3, 0, 0,
# 0] — exactly the three inputs y[0] read, with the weights it read them with. With a
# general g every input collects what the windows covering it send back — the fan-out sum
# again, since each x[j] is read by up to three windows.

# %%
def weighted_output(x, w, upstream):
    return O.sum(O.conv2d(x, w) * upstream)           # ∂/∂y of this is exactly `upstream`


conv_grads = C.grad(weighted_output, argnums=(0, 1))
only_first = np.array([1, 0, 0, 0], np.float32).reshape(1, 1, 1, 4)
dx, dw = conv_grads(as_image, as_kernel, only_first)
print("g = [1, 0, 0, 0]:       ∂L/∂x =", dx.ravel(), "  ∂L/∂w =", dw.ravel())
upstream = np.array([1, -1, 2, 0.5], np.float32)
dx, dw = conv_grads(as_image, as_kernel, upstream.reshape(1, 1, 1, 4))
print("g = [1, -1, 2, 0.5]:    ∂L/∂x =", dx.ravel(), "  ∂L/∂w =", dw.ravel())
assert np.allclose(dx.ravel(), np.convolve(upstream, kernel, mode="full"))
assert np.allclose(dw.ravel(), np.correlate(signal, upstream, mode="valid"))

# %% [markdown]
# In the backward graph the two gradients are two new primitives, `conv2d_grad_input` and
# `conv2d_grad_weight`. **What you should see:** the upstream g (`upstream`, times the seed)
# goes into both; `conv2d_grad_input` also reads the kernel w and `conv2d_grad_weight` also
# reads the signal x (dashed: forward values the backward reads). The generated code makes all three — the
# forward and both gradients — one *implicit GEMM* (a matrix product whose operand tiles are
# gathered from the image on the fly), three ways. (The small kernel between them is the
# loss, `mul_sum`: Σ g · y. Its gradient with respect to y is 1 · g, which the simplify pass
# reduces to g itself: no kernel.)

# %%
joint = C.grad_graph(C.trace(weighted_output, as_image, as_kernel, only_first), argnums=(0, 1))
print(C.simplify(joint))
tut.show(joint, "conv_backward")
conv_step = C.compile(weighted_output, O.spec(as_image.shape), O.spec(as_kernel.shape), O.spec(only_first.shape),
                      grad_argnums=(0, 1))
conv_kernels = [name for name, _ in conv_step.compiled.files()]
print("kernels:", ", ".join(conv_kernels))
assert conv_kernels == ["00_fwd_conv2d.py", "01_fwd_mul_sum.py", "02_bwd_conv2d_grad_input.py", "03_bwd_conv2d_grad_weight.py"]

# %% [markdown]
# ## Stride and padding
#
# **Padding** p adds p zeros at each end, so the kernel can be centred on the edge values too;
# **stride** s moves the kernel s steps at a time. With padding 1 the signal becomes
# [0, 5, 3, 7, 5, 9, 7, 0] and gives 6 outputs (as many as inputs: "same" padding for a kernel
# of 3); stride 2 keeps every other one. In general
#
#     output length = ⌊(n + 2p − k) / s⌋ + 1

# %%
for stride, padding in ((1, 0), (1, 1), (2, 1), (2, 0)):
    out = C.jit(lambda x, w: O.conv2d(x, w, stride=(1, stride), padding=(0, padding)))(as_image, as_kernel)
    predicted = (6 + 2 * padding - 3) // stride + 1
    print(f"stride {stride}, padding {padding}: {out.ravel()}   length {out.shape[-1]} = ⌊(6 + 2·{padding} − 3)"
          f" / {stride}⌋ + 1 = {predicted}")
    assert out.shape[-1] == predicted

# %% [markdown]
# ## Edges in images
#
# In 2-D the kernel is a small square slid over the image. Three classic hand-made kernels:
#
# * an **edge detector** (a discrete Laplacian): 8 times the centre minus its 8 neighbours —
#   0 wherever the image is flat, large where it changes, in any direction;
# * **Sobel x**: right column minus left column (the middle row counted twice): the
#   horizontal rate of change, so it lights up at *vertical* edges;
# * **Sobel y**: its transpose, for horizontal edges.
#
# Two images: a synthetic one (a bright square and a grey disc) and a handwritten digit from
# scikit-learn's digits set (8 × 8 pixels, framed with a dark border and enlarged 4 times with
# smooth interpolation). We stack them into a batch
# [2, 1, 40, 40] and the three kernels into a weight [3, 1, 3, 3]: one `conv2d` computes all
# six filtered images. Padding 1 keeps them 40 × 40.

# %%
size = 40
rows, cols = np.mgrid[0:size, 0:size]
shapes = np.zeros((size, size), np.float32)
shapes[6:20, 5:19] = 1.0                                           # a square
shapes[(rows - 27) ** 2 + (cols - 26) ** 2 <= 8 ** 2] = 0.6        # a disc
digit = np.pad(load_digits().images[0] / 16.0, 1)                            # 8x8 with a dark frame: 10x10
digit = np.clip(zoom(digit, 4, order=3), 0, 1).astype(np.float32)             # -> 40x40, smoothly
images = np.stack([shapes, digit])[:, None]                        # [2, 1, 40, 40]

edge = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], np.float32)
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
sobel_y = sobel_x.T.copy()
filters = np.stack([edge, sobel_x, sobel_y])[:, None]              # [3, 1, 3, 3]


def filter_images(images, filters):
    return O.conv2d(images, filters, padding=1)


filtered = C.jit(filter_images)(images, filters)
magnitude = np.sqrt(filtered[:, 1] ** 2 + filtered[:, 2] ** 2)     # Sobel's gradient magnitude
print("filtered:", filtered.shape)

# %% [markdown]
# The convolution here is the cross-correlation (scipy's `correlate2d`); the flipped
# convolution (`convolve2d`) gives the same edge-detector image — that kernel is symmetric —
# but Sobel x with the opposite sign, since flipping an antisymmetric kernel negates it. A step
# from 0 to 1 under Sobel x gives 1 + 2 + 1 = 4: +4 at the square's left edge, where the image
# brightens to the right, and −4 at its right edge.

# %%
assert np.allclose(filtered[0, 0], correlate2d(shapes, edge, mode="same"))
assert np.allclose(filtered[0, 0], convolve2d(shapes, edge, mode="same"))
assert np.allclose(filtered[0, 1], correlate2d(shapes, sobel_x, mode="same"))
assert np.allclose(filtered[0, 1], -convolve2d(shapes, sobel_x, mode="same"))
left_edge, right_edge = filtered[0, 1, 12, 4:6], filtered[0, 1, 12, 18:20]
print("Sobel x across the square's left edge (columns 4, 5):  ", left_edge)
print("Sobel x across the square's right edge (columns 18, 19):", right_edge)
assert np.array_equal(left_edge, [4, 4]) and np.array_equal(right_edge, [-4, -4])

# %% [markdown]
# **What you should see:** the edge detector draws thin outlines (positive just inside a
# bright region, negative just outside) and is 0 on flat areas; Sobel x is red (positive) on
# the left sides of bright shapes and blue on their right sides, and nothing on the square's
# top and bottom; Sobel y the same for top (red) and bottom (blue) sides; the magnitude
# √(Sobel x² + Sobel y²) outlines every shape whatever the edge's direction — the disc's edges
# weaker (0.6 instead of 1), the digit's strokes as double lines, one on each side. (Why the
# dark frame around the digit? Its first and last rows are not black, and zero padding would
# put black pixels right next to them: the kernels would see edges along the border that are
# not in the digit. Padding invents edges wherever the border is not dark.)

# %%
fig, axes = plt.subplots(2, 5, figsize=(14, 6))
for row, name in enumerate(("shapes", "digit")):
    panels = [(images[row, 0], "image", "gray", False), (filtered[row, 0], "edge detector", "RdBu_r", True),
              (filtered[row, 1], "Sobel x", "RdBu_r", True), (filtered[row, 2], "Sobel y", "RdBu_r", True),
              (magnitude[row], "magnitude", "magma", False)]
    for ax, (picture, title, cmap, signed) in zip(axes[row], panels):
        limit = np.abs(picture).max() if signed else None          # signed: white is 0, red +, blue −
        shown = ax.imshow(picture, cmap=cmap, vmin=-limit if signed else None, vmax=limit)
        ax.set_title(f"{name}: {title}", fontsize=10)
        ax.axis("off")
        fig.colorbar(shown, ax=ax, fraction=0.046)
tut.show(fig, "edges")

# %% [markdown]
# The kernel that computed them. Rows of the implicit GEMM are output pixels (n, out_h,
# out_w), columns are output channels (the three kernels), and the reduction runs over the
# 3 × 3 taps: each tap reads the input pixel at out_h − 1 + kh, out_w − 1 + kw (the −1 is the
# padding), masked to 0 outside the image — the padding zeros are never stored anywhere.

# %%
filter_program = C.compile(filter_images, O.spec(images.shape), O.spec(filters.shape))
(filter_file, filter_source), = filter_program.compiled.files()
tut.show_code(filter_source, start="for k_start in range", end="acc = tl.dot", title=filter_file)

# %% [markdown]
# ## Pooling
#
# Pooling shrinks an image by summarizing each window: 2 × 2 windows with stride 2 turn a
# 4 × 4 image into 2 × 2. **Max pooling** keeps each window's largest value, **average
# pooling** its mean.

# %%
grid = np.array([[1, 3, 2, 0],
                 [4, 6, 5, 1],
                 [7, 2, 9, 8],
                 [0, 1, 3, 4]], np.float32).reshape(1, 1, 4, 4)
max_pooled = C.jit(lambda x: O.max_pool2d(x, 2))(grid)
avg_pooled = C.jit(lambda x: O.avg_pool2d(x, 2))(grid)
print("max pool:\n", max_pooled[0, 0], "\naverage pool:\n", avg_pooled[0, 0])
assert np.array_equal(max_pooled[0, 0], [[6, 5], [7, 9]]) and np.array_equal(avg_pooled[0, 0], [[3.5, 2], [2.5, 6]])

# %% [markdown]
# ### Their gradients
#
# Send a different gradient back from each pooled cell, g = [[1, 2], [3, 4]], and ask where it
# lands in the input.
#
# * The **average** is a linear function: each cell of a window counts 1/4, so each input cell
#   receives 1/4 of its window's g.
# * The **max** of a window *is* one of its cells: y = x[argmax]. Nudge that cell and y moves
#   with it (derivative 1); nudge any other cell a little and y does not move at all
#   (derivative 0). So the whole of g goes to the one cell that won, and the other three get 0.
#   (If two cells tie, the first one in the window wins, and only it gets the gradient.)

# %%
window_gradient = np.array([[1, 2], [3, 4]], np.float32).reshape(1, 1, 2, 2)


def max_pool_output(x, upstream):
    return O.sum(O.max_pool2d(x, 2) * upstream)


def avg_pool_output(x, upstream):
    return O.sum(O.avg_pool2d(x, 2) * upstream)


max_grad = C.grad(max_pool_output)(grid, window_gradient)[0, 0]
avg_grad = C.grad(avg_pool_output)(grid, window_gradient)[0, 0]
print("∂L/∂x through max pooling:\n", max_grad, "\n∂L/∂x through average pooling:\n", avg_grad)
assert np.array_equal(max_grad, [[0, 0, 0, 0], [0, 1, 2, 0], [3, 0, 4, 0], [0, 0, 0, 0]])
assert np.array_equal(avg_grad, np.kron(window_gradient[0, 0], np.full((2, 2), 0.25)))

ties = np.array([[5, 5, 0, 1],
                 [1, 5, 2, 2]], np.float32).reshape(1, 1, 2, 4)       # two windows, each with a tie
tie_grad = C.grad(lambda x: O.sum(O.max_pool2d(x, 2)))(ties)[0, 0]
print("ties: the first max of each window takes the whole gradient:\n", tie_grad)
assert np.array_equal(tie_grad, [[1, 0, 0, 0], [0, 0, 1, 0]])

# %% [markdown]
# **What you should see:** through max pooling the four numbers 1, 2, 3, 4 land on the cells
# that held 6, 5, 7 and 9 (the winners), and twelve cells get exactly 0; through average
# pooling every cell gets a quarter of its window's number.

# %%
fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
panels = [(grid[0, 0], "input x"), (max_pooled[0, 0], "max pool"), (avg_pooled[0, 0], "average pool"),
          (max_grad, "∂L/∂x via max pool\n(g = [[1, 2], [3, 4]])"), (avg_grad, "∂L/∂x via average pool")]
for ax, (values, title) in zip(axes, panels):
    ax.imshow(values, cmap="Blues", vmin=0, vmax=max(values.max(), 1))
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:g}", ha="center", va="center", color="black" if v < 0.6 * values.max() else "white")
    if values.shape == (4, 4):                 # the borders of the four 2 x 2 windows
        ax.axhline(1.5, color="tab:orange", lw=2)
        ax.axvline(1.5, color="tab:orange", lw=2)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
tut.show(fig, "pooling")

# %% [markdown]
# How chainrule writes max pooling: `O.max_pool2d` is a composite of two primitives,
# `window_argmax` (the offset of each window's max, an integer) and `window_gather` (the value
# at that offset). The gradient of a gather is a *scatter*: `window_scatter` adds each window's
# g at its winner's offset, and the integer offsets themselves get no gradient. **What you
# should see** in the backward graph: `window_argmax` feeds both `window_gather` (forward) and,
# dashed, `window_scatter` (backward) — the backward reuses the offsets the forward found, so
# it never compares values again.

# %%
pool_joint = C.grad_graph(C.trace(max_pool_output, grid, window_gradient), argnums=(0,))
print(C.simplify(pool_joint))
tut.show(pool_joint, "max_pool_backward")

# %% [markdown]
# In the generated code the forward is one kernel (`max_pool2d`) that finds each window's max
# and writes both the offsets (int64) and the maxima — its header says so. The backward kernel
# (`window_scatter`) gives each *input* cell a lane, visits the windows that contain it and
# adds the g of those whose stored offset points at it — a gather, so no two lanes ever write
# the same address:

# %%
pool_step = C.compile(max_pool_output, O.spec(grid.shape), O.spec(window_gradient.shape), grad_argnums=(0,))
pool_files = pool_step.compiled.files()
print("kernels:", ", ".join(name for name, _ in pool_files))
forward_file, forward_source = next((name, text) for name, text in pool_files if "window_argmax" in text)
tut.show_code(forward_source, start="reads:", end='"""', title=forward_file)
scatter_file, scatter_source = next((name, text) for name, text in pool_files if "window_scatter" in text)
tut.show_code(scatter_source, start="for kh in tl.static_range", end="tl.store", title=scatter_file)

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** By hand, the cross-correlation (valid, stride 1) of x = [5, 3, 7, 5, 9, 7]
# with the kernel [−1, 2, −1] (a second difference: it responds to bumps). Four numbers. The
# check runs `O.conv2d`.

# %%
answer_1 = [-5 + 6 - 7, -3 + 14 - 5, -7 + 10 - 9, -5 + 18 - 7]          # your answer here
second_difference = np.array([-1, 2, -1], np.float32).reshape(1, 1, 1, 3)
tut.check(1, "x ⋆ [-1, 2, -1]", got=answer_1, want=conv_compiled(as_image, second_difference).ravel())

# %% [markdown]
# **Exercise 2.** A 28 × 28 image, a 5 × 5 kernel, stride 2, padding 2: how many rows (and
# columns) does the output have? The check asks chainrule's shape rule.

# %%
answer_2 = (28 + 2 * 2 - 5) // 2 + 1                                  # your answer here
traced = C.trace(lambda x, w: O.conv2d(x, w, stride=2, padding=2), O.spec((1, 1, 28, 28)), O.spec((1, 1, 5, 5)))
tut.check(2, "output rows of a 5x5 conv, stride 2, padding 2, on 28x28", got=answer_2,
          want=traced.outputs[0].shape[2], hint="⌊(n + 2p − k) / s⌋ + 1")

# %% [markdown]
# **Exercise 3.** Overlapping windows. Max-pool x = [1, 5, 2, 0, 3] (an image one pixel high)
# with windows of 3 and stride 1: the windows are [1, 5, 2], [5, 2, 0] and [2, 0, 3]. With
# L = the sum of the three maxima, what is ∂L/∂x? (The 5 wins two windows — its gradient is a
# fan-out sum.)

# %%
answer_3 = [0, 2, 0, 0, 1]                                             # your answer here
row_signal = np.array([1, 5, 2, 0, 3], np.float32).reshape(1, 1, 1, 5)
sliding_max_grad = C.grad(lambda x: O.sum(O.max_pool2d(x, (1, 3), stride=1)))(row_signal)
tut.check(3, "∂L/∂x through overlapping max windows", got=answer_3, want=sliding_max_grad.ravel())

# %%
tut.done()
