"""The conv kernel family (compiler/codegen/conv.py) under Triton's interpreter.

conv2d, conv2d_grad_input and conv2d_grad_weight are each compared in float32 with the
NumPy reference backend, over kernel shapes, strides, paddings and dilations that exercise
every mask (padding, windows that skip input pixels, taps that land between outputs); the
executor runs with poisoned (NaN) outputs, so an element a kernel forgets shows up.
O.conv2d's value and its gradients (input, weight, bias) go through value_and_grad.
"""
import re

import numpy as np
import pytest
import torch
import triton

import compiler as C
import ops as O
from compiler.codegen import Target
from compiler.codegen import conv as conv_codegen
from compiler.lower import lower
from ops.printer import value_names
from ops import primitives as P
from runtime.executors import kernel_cache
from runtime.executors.triton import TritonExecutor
from tests.helpers import nonzero, rel_error, kernel_executor

TOL = 1e-4

#        N  C  H   W  O  KH KW stride  padding  dilation
CASES = [
    (2, 3, 7, 6, 4, 3, 3, (1, 1), (1, 1), (1, 1)),      # the common 3x3, padding 1
    (1, 1, 5, 5, 1, 1, 1, (1, 1), (0, 0), (1, 1)),      # 1x1 conv, one channel in and out
    (2, 5, 6, 7, 3, 2, 3, (2, 1), (1, 0), (1, 1)),      # non-square kernel, stride on one axis
    (1, 3, 9, 8, 5, 2, 2, (3, 3), (0, 0), (1, 1)),      # stride > kernel: dx has pixels no window sees
    (2, 3, 7, 7, 2, 3, 3, (1, 1), (2, 2), (2, 2)),      # dilated, padding keeps the size
    (3, 1, 4, 5, 2, 3, 1, (1, 2), (1, 0), (2, 1)),      # everything differs per axis
    (1, 3, 3, 3, 5, 3, 3, (2, 2), (1, 1), (1, 1)),      # an image as small as the kernel
    (2, 3, 5, 6, 3, 2, 3, (2, 3), (1, 2), (2, 1)),      # stride, padding and dilation all at once
    (2, 2, 1, 4, 3, 1, 3, (3, 1), (1, 1), (1, 1)),      # one-row image: the only output row is padding
    (1, 2, 1, 6, 3, 1, 3, (2, 2), (0, 1), (1, 1)),      # one-row image, one output row, taps on a stride
    (2, 16, 10, 10, 5, 3, 3, (1, 1), (1, 1), (1, 1)),   # 16 channels: a reduction of 144, not a power of 2
]


def _ids(case):
    n, c, h, w, o, kh, kw, s, p, d = case
    return f"{n}x{c}x{h}x{w}-o{o}-k{kh}x{kw}-s{s[0]}{s[1]}-p{p[0]}{p[1]}-d{d[0]}{d[1]}"


def _shapes(case):
    n, c, h, w, o, kh, kw, stride, padding, dilation = case
    attrs = dict(stride=stride, padding=padding, dilation=dilation)
    out_h, out_w = ((size + 2 * pad - dil * (k - 1) - 1) // st + 1
                    for size, k, st, pad, dil in zip((h, w), (kh, kw), stride, padding, dilation))
    return (n, c, h, w), (o, c, kh, kw), (n, o, out_h, out_w), attrs


def _all_three(in_shape, w_shape, attrs):
    """One program holding the three primitives: three conv kernels in one schedule."""
    def f(x, w, g):
        return (P.conv2d(x, w, **attrs),
                P.conv2d_grad_input(g, w, in_shape=in_shape, **attrs),
                P.conv2d_grad_weight(x, g, weight_shape=w_shape, **attrs))
    return f


def _run_poisoned(f, args):
    graph = C.trace(f, *args)
    return kernel_executor(graph, Target(), poison=True)(args)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_primitives_match_reference(case, rng):
    in_shape, w_shape, out_shape, attrs = _shapes(case)
    x, w, g = (nonzero(rng, s, dtype=np.float32) for s in (in_shape, w_shape, out_shape))
    f = _all_three(in_shape, w_shape, attrs)
    want = C.jit(f, backend="reference")(x, w, g)
    got = _run_poisoned(f, [x, w, g])
    for name, a, b in zip(("conv2d", "conv2d_grad_input", "conv2d_grad_weight"), got, want):
        assert not np.isnan(a).any(), f"{name} left elements unwritten"
        assert rel_error(a, b) < TOL, name


def test_zero_windows_are_exact(rng):
    """Where no window reads the input (stride > kernel, or a row made only of padding),
    dx is exactly zero, and a conv whose only output row lies in the padding is zero too."""
    in_shape, w_shape, out_shape, attrs = _shapes((2, 2, 1, 4, 3, 1, 3, (3, 1), (1, 1), (1, 1)))
    x, w, g = (nonzero(rng, s, dtype=np.float32) for s in (in_shape, w_shape, out_shape))
    y, _, dw = _run_poisoned(_all_three(in_shape, w_shape, attrs), [x, w, g])
    assert (y == 0).all() and (dw == 0).all()
    in_shape, w_shape, out_shape, attrs = _shapes((1, 3, 9, 8, 5, 2, 2, (3, 3), (0, 0), (1, 1)))
    x, w, g = (nonzero(rng, s, dtype=np.float32) for s in (in_shape, w_shape, out_shape))
    _, dx, _ = _run_poisoned(_all_three(in_shape, w_shape, attrs), [x, w, g])
    assert (dx[:, :, 2::3] == 0).all() and (dx[:, :, :, 2::3] == 0).all()   # the gaps between windows
    assert (dx[:, :, ::3, ::3] != 0).all()


@pytest.mark.parametrize("blocks", [(16, 16, 16), (32, 16, 64)])
def test_small_blocks_walk_tiles_and_k(rng, blocks):
    """Blocks smaller than the GEMMs: several tiles each way and several steps along the
    reduction in each of the three kernels (the interpreter's own tiles take most convs in
    one program)."""
    in_shape, w_shape, out_shape, attrs = _shapes((2, 18, 9, 10, 20, 3, 3, (2, 1), (1, 1), (1, 1)))
    x, w, g = (nonzero(rng, s, dtype=np.float32) for s in (in_shape, w_shape, out_shape))
    f = _all_three(in_shape, w_shape, attrs)
    want = C.jit(f, backend="reference")(x, w, g)
    executor = kernel_executor(C.trace(f, x, w, g), Target())
    tensors = dict(zip(executor.graph.inputs, (torch.from_numpy(a) for a in (x, w, g))))
    block_m, block_n, block_k = blocks
    for kernel, module in zip(executor.schedule.kernels, executor.modules):
        (node,) = kernel.outputs
        out = torch.full(node.shape, float("nan"))
        module.launch(*(tensors[view.base] for view in kernel.inputs.values()), out,
                      BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
        assert not torch.isnan(out).any(), node.op
        assert rel_error(out.numpy(), want[executor.graph.outputs.index(node)]) < TOL, node.op


def test_interpreter_runs_a_conv_as_one_program_from_the_text_a_gpu_compiles():
    """Under the interpreter the programs of a launch run one after the other: the zoo
    ResNet's 16 -> 16 channel conv (a [4096 x 144] @ [144 x 16] GEMM) and both its gradients
    are one program each with the first of the file's INTERPRETER_CONFIGS, while a GPU
    launches the first of its CONFIGS (many programs). The text is the same for both."""
    in_shape, w_shape, out_shape, attrs = _shapes((64, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1), (1, 1)))
    graph = C.trace(_all_three(in_shape, w_shape, attrs), O.spec(in_shape), O.spec(w_shape), O.spec(out_shape))
    names = value_names(graph)
    for kernel in lower(graph).kernels:
        text = conv_codegen.generate(kernel, names, Target())
        assert text == conv_codegen.generate(kernel, names, Target(device="cuda", interpret=False))
        module = kernel_cache.load(text, interpret=True)
        grid = re.search(r"grid = (.*)", text.split("def launch")[1]).group(1)
        assert eval(grid, {"triton": triton, **module.INTERPRETER_CONFIGS[0]}) == (1, 1), kernel.name
        assert eval(grid, {"triton": triton, **module.CONFIGS[0]}) != (1, 1), kernel.name
        assert "int64" not in text and "tl.arange(0, BLOCK_K)" in text


#        N  C  H  W  O  KH KW stride padding  dilation
GRAD_CASES = [
    (2, 3, 6, 5, 4, 3, 5, 1, "same", 1),        # non-square 'same'
    (1, 5, 5, 5, 3, 1, 1, 1, 0, 1),             # 1x1
    (2, 1, 7, 6, 2, 2, 3, (2, 1), (1, 2), 1),   # non-square kernel, per-axis stride and padding
    (2, 3, 6, 6, 3, 3, 3, 1, "same", 2),        # 'same' with dilation
    (1, 3, 8, 7, 2, 2, 2, 3, 1, 1),             # stride > kernel
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: "-".join(map(str, c)).replace(" ", ""))
def test_conv2d_value_and_grads(case, rng):
    n, c, h, w_, o, kh, kw, stride, padding, dilation = case
    x = nonzero(rng, (n, c, h, w_), dtype=np.float32)
    w = nonzero(rng, (o, c, kh, kw), dtype=np.float32)
    b = nonzero(rng, (o,), dtype=np.float32)

    def loss(x, w, b, r):
        y = O.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
        return O.sum(y * r)

    y_shape = C.jit(lambda x, w, b: O.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation),
                    backend="reference")(x, w, b).shape
    r = nonzero(rng, y_shape, dtype=np.float32)
    want_value, want_grads = C.value_and_grad(loss, argnums=(0, 1, 2), backend="reference")(x, w, b, r)
    value, grads = C.value_and_grad(loss, argnums=(0, 1, 2), backend="interpret")(x, w, b, r)
    assert rel_error(value, want_value) < TOL
    for name, got, want in zip(("input", "weight", "bias"), grads, want_grads):
        assert rel_error(got, want) < TOL, name


def test_strided_views(rng):
    """Every operand read through a view: channels-last permutes, stepped slices with an
    offset, and a batch broadcast (stride 0)."""
    attrs = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    in_shape, w_shape = (3, 3, 7, 6), (4, 3, 2, 3)
    out_shape = _shapes((3, 3, 7, 6, 4, 2, 3, (2, 1), (1, 1), (1, 2)))[2]

    def f(x_nhwc, w_big, x_one, g_nhwc):
        x = O.permute(x_nhwc, (0, 3, 1, 2))                  # NHWC storage read as NCHW
        w = w_big[1:, :, ::2, 1:]                             # offset and a stepped slice
        x_b = O.broadcast_to(x_one, in_shape)                 # one image for the whole batch
        g = O.permute(g_nhwc, (0, 3, 1, 2))
        return (P.conv2d(x, w, **attrs), P.conv2d(x_b, w, **attrs),
                P.conv2d_grad_input(g, w, in_shape=in_shape, **attrs),
                P.conv2d_grad_weight(x, g, weight_shape=w_shape, **attrs),
                P.conv2d_grad_weight(x_b, g, weight_shape=w_shape, **attrs))

    n, c, h, w_ = in_shape
    args = [nonzero(rng, (n, h, w_, c), dtype=np.float32), nonzero(rng, (5, 3, 4, 4), dtype=np.float32),
            nonzero(rng, (1, c, h, w_), dtype=np.float32),
            nonzero(rng, (out_shape[0], out_shape[2], out_shape[3], out_shape[1]), dtype=np.float32)]
    graph = C.trace(f, *args)
    views = [v for k in lower(graph).kernels for v in k.inputs.values()]
    assert any(0 in v.strides for v in views) and any(v.offset for v in views)   # really strided
    want = C.jit(f, backend="reference")(*args)
    got = kernel_executor(graph, Target(), poison=True)(args)
    for a, b in zip(got, want):
        assert rel_error(a, b) < TOL


def test_float64_and_mixed_dtypes(rng):
    """float64 accumulates in float64; a float32 operand is widened before the product."""
    attrs = dict(stride=(1, 2), padding=(1, 0), dilation=(1, 1))
    x = nonzero(rng, (2, 3, 5, 6))
    w = nonzero(rng, (4, 3, 3, 2), dtype=np.float32)
    g = nonzero(rng, _shapes((2, 3, 5, 6, 4, 3, 2, (1, 2), (1, 0), (1, 1)))[2])
    f = _all_three(x.shape, w.shape, attrs)
    want = C.jit(f, backend="reference")(x, w, g)
    got = _run_poisoned(f, [x, w, g])
    for a, b in zip(got, want):
        assert a.dtype == np.float64 and rel_error(a, b) < 1e-12


def test_generated_source():
    """One text for the interpreter and a GPU, with launch parameters for each (GPU configs for
    the autotuner, runtime/executors/autotune.py); tf32 when allowed is the one difference; the
    three kernels share the same GEMM skeleton."""
    in_shape, w_shape, out_shape, attrs = _shapes((2, 3, 7, 6, 4, 3, 3, (2, 1), (1, 1), (1, 1)))
    graph = C.trace(_all_three(in_shape, w_shape, attrs), O.spec(in_shape), O.spec(w_shape), O.spec(out_shape))
    names = value_names(graph)
    kernels = lower(graph).kernels
    for kernel in kernels:
        cpu = conv_codegen.generate(kernel, names, Target())
        gpu = conv_codegen.generate(kernel, names, Target(device="cuda", interpret=False, allow_tf32=True))
        assert 'input_precision="ieee"' in cpu and 'input_precision="tf32"' in gpu
        assert cpu == gpu.replace('input_precision="tf32"', 'input_precision="ieee"')    # nothing else differs
        assert "num_warps=num_warps" in gpu
        assert "@triton.autotune" not in gpu                  # our autotuner chooses, and logs the choice
        assert "tl.dot(" in cpu and "for k_start in range(" in cpu and "atomic" not in cpu
    grad_input = conv_codegen.generate(kernels[1], names, Target())
    assert "% 2 == 0" in grad_input          # stride 2: only whole output positions are read
