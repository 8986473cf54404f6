"""The GPU suite, run where torch.cuda.is_available(): each kernel family (matmul, convolutions
and their gradients, pooling, norms, softmax + cross-entropy) against torch on the same GPU
and against the roofline (measured copy bandwidth and matmul peak), and whole training
steps against torch eager and torch.compile, with peak memory. Without a GPU, `gpu_suite`
returns {"skipped": NO_GPU} and prints that line once.

On the GPU, times are CUDA events, and enough input sets are cycled through that the bytes
touched before a set comes back exceed the L2 cache (so caches do not flatter).
"""
from __future__ import annotations

import contextlib
import gc
import math
from dataclasses import dataclass
from typing import Callable

import compiler as C
import ops as O
from compiler.codegen import Target
from compiler.pipeline import compile_kernels
from ops import primitives as P

from ..executors.replay import Recording
from ..executors.triton import TritonExecutor
from .timing import median_seconds, ratio, rotating
from .workloads import CLASSES, SEED, ZOO_MODELS, Workload, chainrule_step, torch_step

NO_GPU = ("no GPU on this machine (torch.cuda.is_available() is False): the GPU part (kernels against "
          "cuBLAS/cuDNN/torch and the roofline, training steps against torch eager and torch.compile) was skipped")


# -- kernel families against torch and the roofline ---------------------------------------------------

@dataclass
class KernelCase:
    """One kernel-family measurement: our generated kernels for `fn` against `torch_fn`."""
    family: str                   # "matmul", "conv2d", "conv2d_grad_input", "max_pool2d", ...
    label: str                    # shape and precision, for the table
    fn: Callable                  # the DSL function (ours)
    torch_fn: Callable            # the same computation in torch
    inputs: list                  # (shape, dtype) of each input; int64 inputs are class labels
    flops: float = 0.0            # 0: bandwidth-bound (the roofline is bytes / copy bandwidth)
    precision: str = "fp32"       # "fp32" (IEEE), "tf32" or "fp16": which measured matmul peak bounds it
    grad: tuple = ()              # inputs to differentiate: the case is forward + backward (a VJP)
    classes: int = CLASSES        # int64 inputs are labels in [0, classes)


MATMUL_SIZES = (1024, 2048, 4096, 8192)
CONV_SHAPES = (    # name: (N, C_in, H=W, C_out, kernel, stride, padding)
    ("lenet5 c1", (256, 1, 28, 6, 5, 1, 0)), ("lenet5 c2", (256, 6, 12, 16, 5, 1, 0)),
    ("resnet18 stem", (64, 3, 224, 64, 7, 2, 3)), ("resnet18 layer1", (64, 64, 56, 64, 3, 1, 1)),
    ("resnet18 layer2 down", (64, 64, 56, 128, 3, 2, 1)), ("resnet18 layer3", (64, 256, 14, 256, 3, 1, 1)),
    ("resnet18 layer4", (64, 512, 7, 512, 3, 1, 1)),
    ("cifar resnet18 layer1", (128, 64, 32, 64, 3, 1, 1)), ("cifar resnet18 layer2", (128, 128, 16, 128, 3, 1, 1)),
    ("cifar resnet18 layer3", (128, 256, 8, 256, 3, 1, 1)), ("cifar resnet18 layer4", (128, 512, 4, 512, 3, 1, 1)))


def matmul_cases(sizes):
    cases = []
    for n in sizes:
        for precision in ("fp32", "tf32", "fp16"):
            dtype = "float16" if precision == "fp16" else "float32"
            cases.append(KernelCase("matmul", f"{n}^3 {precision}", lambda a, b: a @ b, lambda a, b: a @ b,
                                    [((n, n), dtype)] * 2, flops=2.0 * n ** 3, precision=precision))
    return cases


def conv_cases(shapes):
    """conv2d forward and both backward convolutions (input and weight gradients) per shape."""
    import torch  # heavy: imported when the GPU suite runs
    import torch.nn.functional as F  # heavy: imported when the GPU suite runs

    cases = []
    for name, (n, cin, hw, cout, k, s, p) in shapes:
        x_shape, w_shape = (n, cin, hw, hw), (cout, cin, k, k)
        y_shape = (n, cout, (hw + 2 * p - k) // s + 1, (hw + 2 * p - k) // s + 1)
        flops = 2.0 * math.prod(y_shape) * cin * k * k          # the same for all three directions
        conv = {"stride": (s, s), "padding": (p, p), "dilation": (1, 1)}
        label = f"{name} {'x'.join(map(str, x_shape))} * {'x'.join(map(str, w_shape))} s{s}"
        cases += [
            KernelCase("conv2d", label, lambda x, w, s=s, p=p: O.conv2d(x, w, stride=s, padding=p),
                       lambda x, w, s=s, p=p: F.conv2d(x, w, stride=s, padding=p),
                       [(x_shape, "float32"), (w_shape, "float32")], flops),
            KernelCase("conv2d_grad_input", label,
                       lambda g, w, shape=x_shape, c=conv: P.conv2d_grad_input(g, w, in_shape=shape, **c),
                       lambda g, w, shape=x_shape, s=s, p=p: torch.nn.grad.conv2d_input(shape, w, g, stride=s,
                                                                                          padding=p),
                       [(y_shape, "float32"), (w_shape, "float32")], flops),
            KernelCase("conv2d_grad_weight", label,
                       lambda x, g, shape=w_shape, c=conv: P.conv2d_grad_weight(x, g, weight_shape=shape, **c),
                       lambda x, g, shape=w_shape, s=s, p=p: torch.nn.grad.conv2d_weight(x, shape, g, stride=s,
                                                                                           padding=p),
                       [(x_shape, "float32"), (y_shape, "float32")], flops)]
    return cases


ROW_SHAPES = {    # family: shapes, the quick run's first
    "max_pool2d": [(256, 6, 24, 2, 2, 0), (64, 64, 112, 3, 2, 1)],       # (N, C, H=W, kernel, stride, padding)
    "batch_norm": [(128, 64, 32), (64, 256, 14)],                         # (N, C, H=W), training mode
    "layer_norm": [(4096, 1024), (8192, 4096)],                           # (rows, features)
    "softmax_cross_entropy": [(4096, 1000), (1024, 32768)]}               # (N, classes)


def row_kernel_cases(shapes):
    """Pooling, batch norm, layer norm and softmax + cross-entropy, each forward + backward
    (a VJP with a random cotangent), at the shapes of ROW_SHAPES' form."""
    import torch.nn.functional as F  # heavy: imported when the GPU suite runs

    cases = []
    for n, c, hw, k, s, p in shapes["max_pool2d"]:
        cases.append(KernelCase("max_pool2d", f"{n}x{c}x{hw}x{hw} k{k} s{s} p{p}",
                                lambda x, k=k, s=s, p=p: O.max_pool2d(x, k, s, p),
                                lambda x, k=k, s=s, p=p: F.max_pool2d(x, k, s, p), [((n, c, hw, hw), "float32")],
                                grad=(0,)))
    for n, c, hw in shapes["batch_norm"]:
        cases.append(KernelCase("batch_norm", f"{n}x{c}x{hw}x{hw} training",
                                lambda x, w, b: O.batch_norm(x, None, None, w, b, training=True),
                                lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                                [((n, c, hw, hw), "float32"), ((c,), "float32"), ((c,), "float32")], grad=(0, 1, 2)))
    for n, d in shapes["layer_norm"]:
        cases.append(KernelCase("layer_norm", f"{n}x{d}", lambda x, w, b, d=d: O.layer_norm(x, (d,), w, b),
                                lambda x, w, b, d=d: F.layer_norm(x, (d,), w, b),
                                [((n, d), "float32"), ((d,), "float32"), ((d,), "float32")], grad=(0, 1, 2)))
    for n, c in shapes["softmax_cross_entropy"]:
        cases.append(KernelCase("softmax_cross_entropy", f"{n}x{c}", O.cross_entropy, F.cross_entropy,
                                [((n, c), "float32"), ((n,), "int64")], grad=(0,), classes=c))
    return cases


def kernel_cases(quick):
    """Every kernel-family case; quick: the smallest of each family."""
    if quick:
        return (matmul_cases(MATMUL_SIZES[:1]) + conv_cases(CONV_SHAPES[1:2])
                + row_kernel_cases({family: shapes[:1] for family, shapes in ROW_SHAPES.items()}))
    return matmul_cases(MATMUL_SIZES) + conv_cases(CONV_SHAPES) + row_kernel_cases(ROW_SHAPES)


class OurKernels:
    """The generated kernels of one case, launched straight on device tensors (no NumPy round
    trip): the graph is traced (and, for a VJP case, differentiated with the cotangent as an
    input), simplified, fused, lowered, planned and generated as by C.compile, for `target`."""

    def __init__(self, case, target):
        graph = C.trace(case.fn, *[O.spec(shape, dtype) for shape, dtype in case.inputs])
        if case.grad:
            graph = C.grad_graph(graph, case.grad, seed="input")
        self.graph = C.simplify(graph)
        self.executor = TritonExecutor(compile_kernels(self.graph, target))

    def bind(self, tensors):
        """(run, outputs) for one input set (in graph-input order): run() launches every kernel,
        with its output buffers allocated here, once (a recording, runtime/executors/replay.py, launched one
        by one); outputs() reads the graph's outputs."""
        import torch  # heavy: imported when the GPU suite runs

        ex = self.executor
        if ex.arena is None:
            ex.arena = torch.empty(ex.plan.arena_bytes, dtype=torch.uint8, device=ex.device)
        recording = Recording(ex, inputs=dict(zip(self.graph.inputs, tensors)), capture=False)
        return recording.launch_all, lambda: recording.outputs


def case_inputs(case, device, generator):
    """One random input set (the cotangent last for a VJP case), and its torch runner: a
    function returning the case's outputs in our graph's order ([value, *gradients])."""
    import torch  # heavy: imported when the GPU suite runs

    tensors = []
    for shape, dtype in case.inputs:
        if dtype == "int64":
            tensors.append(torch.randint(0, case.classes, shape, device=device, generator=generator))
        else:
            tensors.append(torch.randn(shape, device=device, generator=generator, dtype=getattr(torch, dtype)))
    if not case.grad:
        return tensors, lambda: [case.torch_fn(*tensors)]
    with torch.no_grad():
        cotangent = torch.randn(case.torch_fn(*tensors).shape, device=device, generator=generator)
    leaves = [t.requires_grad_() if i in case.grad else t for i, t in enumerate(tensors)]

    def run():
        value = case.torch_fn(*leaves)
        return [value, *torch.autograd.grad(value, [leaves[i] for i in case.grad], cotangent)]
    return [t.detach() for t in tensors] + [cotangent], run


def rotation(set_bytes, l2_bytes, most=64):
    """How many input sets to cycle through: enough that the bytes touched before a set comes
    back exceed 3x the L2 cache (at least 2 sets, at most `most`: the tiniest cases still fit)."""
    return max(2, min(most, math.ceil(3 * l2_bytes / max(set_bytes, 1))))


@contextlib.contextmanager
def torch_tf32(enabled):
    """torch's matmuls and convolutions in TF32 (or IEEE float32) for the body."""
    import torch  # heavy: imported when the GPU suite runs

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(ours, theirs):
    """The largest ‖ours − theirs‖ / ‖theirs‖ over the outputs, in float64."""
    return max(float((a.double() - b.double()).norm() / max(float(b.double().norm()), 1e-30))
               for a, b in zip(ours, theirs))


def measure_case(case, peaks, device, warmup, repeat, l2_bytes):
    """One row: our time and torch's, each against the roofline, and our outputs' error."""
    import torch  # heavy: imported when the GPU suite runs

    generator = torch.Generator(device=device).manual_seed(SEED)
    first = case_inputs(case, device, generator)
    set_bytes = sum(t.numel() * t.element_size() for t in first[0])
    sets = [first] + [case_inputs(case, device, generator) for _ in range(rotation(set_bytes, l2_bytes) - 1)]
    no_autograd = contextlib.nullcontext() if case.grad else torch.no_grad()
    with torch_tf32(case.precision == "tf32"), no_autograd:
        theirs = median_seconds(lambda k: sets[k % len(sets)][1](), warmup, repeat, cuda=device == "cuda")
        expected = first[1]()
    outputs = [o.detach() for o in expected]
    roofline = max(case.flops / peaks["matmul_flops"][case.precision],
                   (set_bytes + sum(o.numel() * o.element_size() for o in outputs)) / peaks["copy_bytes_per_second"])
    row = {"family": case.family, "case": case.label, "torch_seconds": theirs, "roofline_seconds": roofline,
           "torch_roofline_fraction": roofline / theirs, "ours_seconds": None}
    try:
        mine, results = time_ours(case, [tensors for tensors, _ in sets], device, warmup, repeat)
    except Exception as e:          # a dtype we do not generate (float16), a kernel that fails: say so, go on
        return {**row, "ours_error": f"{type(e).__name__}: {e}"}
    return {**row, "ours_seconds": mine, "speed_vs_torch": theirs / mine, "ours_roofline_fraction": roofline / mine,
            "max_rel_error": relative_error(results, outputs)}


def time_ours(case, sets, device, warmup, repeat):
    """(median seconds of our kernels over the rotated input sets, our outputs on the first set)."""
    ours = OurKernels(case, Target(device=device, interpret=device != "cuda", allow_tf32=case.precision == "tf32"))
    bound = [ours.bind(tensors) for tensors in sets]
    seconds = median_seconds(lambda k: bound[k % len(bound)][0](), warmup, repeat, cuda=device == "cuda")
    run, outputs = bound[0]
    run()
    return seconds, outputs()


def measure_peaks(quick):
    """The roofline's two roofs on this GPU: copy bandwidth (bytes read + written per second,
    a 1 GiB copy) and matmul throughput per precision (torch's n^3 matmul, n = 8192)."""
    import torch  # heavy: imported when the GPU suite runs

    n_copy, n = (1 << 26, 2048) if quick else (1 << 28, 8192)
    src, dst = torch.randn(n_copy, device="cuda"), torch.empty(n_copy, device="cuda")
    copy = median_seconds(lambda k: dst.copy_(src), 3, 20, cuda=True)
    flops = {}
    for precision, dtype in (("fp32", torch.float32), ("tf32", torch.float32), ("fp16", torch.float16)):
        a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
        with torch_tf32(precision == "tf32"):
            flops[precision] = 2.0 * n ** 3 / median_seconds(lambda k: a @ b, 3, 20, cuda=True)
    return {"copy_bytes_per_second": 2 * src.numel() * src.element_size() / copy, "matmul_flops": flops,
            "matmul_n": n, "copy_bytes": src.numel() * src.element_size()}


# -- training steps against torch eager and torch.compile --------------------------------------------

def measure_gpu_step(make_step, batches, warmup, repeat):
    """Median seconds per step (CUDA events) and peak bytes allocated while the step is built
    and run (torch.cuda.max_memory_allocated, less what was allocated before)."""
    import torch  # heavy: imported when the GPU suite runs

    gc.collect()                          # the previous run's tensors go before the baseline
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step = make_step()
    seconds = median_seconds(rotating(step, batches), warmup, repeat, cuda=True)
    return {"seconds_per_step": seconds, "peak_bytes": torch.cuda.max_memory_allocated() - before}


def gpu_runners(work, torch_compile, device="cuda"):
    """side -> a function building that side's training step of `work` on `device`, each from
    the same initial weights (chainrule's backend "triton": the GPU when there is one)."""
    import torch  # heavy: imported when the GPU suite runs

    def compiled():
        torch._dynamo.reset()             # else every Sequential shares one code object's recompile limit
        return torch_step(work.build(), device, compiled=True)

    runners = {"chainrule": lambda: chainrule_step(work.build(), work, backend="triton"),
               # what each of the two runtime features is worth: the step without a CUDA graph, and untuned
               "chainrule_no_graph": lambda: chainrule_step(work.build(), work, backend="triton", replay=False),
               "chainrule_untuned": lambda: chainrule_step(work.build(), work, backend="triton", autotune=False),
               "torch_eager": lambda: torch_step(work.build(), device)}
    if torch_compile:
        runners["torch_compile"] = compiled
    return runners


def gpu_training_row(work, torch_compile, warmup, repeat):
    """chainrule, torch eager (and torch.compile) training steps of `work`, IEEE float32 (TF32
    off on both sides: chainrule's kernels compute in IEEE float32). A side that fails is
    recorded with its error, and the others still run."""
    batches = work.batches(8)
    runs = {}
    with torch_tf32(False):
        for side, make in gpu_runners(work, torch_compile).items():
            try:
                runs[side] = measure_gpu_step(make, batches, warmup, repeat)
            except Exception as e:
                runs[side] = {"error": f"{type(e).__name__}: {e}"}

    def figure(side, key):
        return runs.get(side, {}).get(key)

    ours = figure("chainrule", "seconds_per_step")
    return {"model": work.name, "batch": work.batch, **runs,
            "speed_vs_eager": ratio(figure("torch_eager", "seconds_per_step"), ours),
            "speed_vs_torch_compile": ratio(figure("torch_compile", "seconds_per_step"), ours),
            "cuda_graph_gain": ratio(figure("chainrule_no_graph", "seconds_per_step"), ours),
            "autotune_gain": ratio(figure("chainrule_untuned", "seconds_per_step"), ours),
            "peak_memory_vs_eager": ratio(figure("chainrule", "peak_bytes"), figure("torch_eager", "peak_bytes"))}


def gpu_workloads(names, quick):
    """The zoo models among `names` on the digits and, when "resnet18" is among them, a CIFAR
    ResNet-18 (3x32x32), each at batch 128 and 256 (quick: 128)."""
    models = [(n, (1, 8, 8)) for n in names if n in ZOO_MODELS]
    if "resnet18" in names:
        models.append(("resnet18_cifar", (3, 32, 32)))
    return [Workload(name, shape, batch) for name, shape in models for batch in ((128,) if quick else (128, 256))]


def gpu_timing(quick):
    """(warm-up calls, timed calls) on the GPU."""
    return (2, 10) if quick else (5, 50)


def gpu_kernels(quick, warmup, repeat, progress=None):
    """Every kernel-family case on this GPU: {"device", "l2_bytes", "peaks", "kernels": rows}."""
    import torch  # heavy: imported when the GPU suite runs

    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    peaks = measure_peaks(quick)
    rows = []
    for case in kernel_cases(quick):
        rows.append(measure_case(case, peaks, "cuda", warmup, repeat, l2))
        if progress:
            progress.update(1, kernel=case.family)
    return {"device": torch.cuda.get_device_name(), "l2_bytes": l2, "warmup": warmup, "repeat": repeat,
            "peaks": peaks, "kernels": rows}


def gpu_suite(names, quick, torch_compile, progress=None):
    """The GPU part, or {"skipped": NO_GPU} (printed) on a machine without one."""
    import torch  # heavy: imported when the GPU suite runs

    if not torch.cuda.is_available():
        print(NO_GPU)
        return {"skipped": NO_GPU}
    warmup, repeat = gpu_timing(quick)
    result = gpu_kernels(quick, warmup, repeat, progress)
    result["training"] = []
    for work in gpu_workloads(names, quick):
        result["training"].append(gpu_training_row(work, torch_compile, warmup, repeat))
        if progress:
            progress.update(1, model=f"{work.name}@{work.batch}")
    return result


def gpu_tasks(names, quick):
    """How many progress steps gpu_suite takes (0 without a GPU)."""
    import torch  # heavy: imported when the GPU suite runs

    return len(kernel_cases(quick)) + len(gpu_workloads(names, quick)) if torch.cuda.is_available() else 0
