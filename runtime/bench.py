"""`chainrule bench`: the benchmark suite, one table of ratios measured in the same run.

CPU (always), for each model's whole training step (forward, backward and the Adam update,
compiled as `chainrule train` compiles it: `C.compile_train_step`): the zoo's logreg, mlp,
lenet and resnet (batch 64 on the 1x8x8 digits) and a ResNet-18-sized CNN (the network of
benchmarks/compile_time.py as layers: batch 8 on 3x64x64):

- compile seconds per pass (`Program.compile_seconds`; the train step is traced as one
  function, so "trace" includes autodiff and the optimizer), with a cold kernel cache;
- torch.compile's cold time to the first training step of the same model (its torch twin,
  runtime/torch_twins.py), each in a fresh process with an empty inductor cache, as the
  ratio torch.compile cold / chainrule compile;
- kernels fused vs unfused, dram_bytes / min_dram_bytes, arena_bytes / live_lower_bound_bytes;
- seconds per step under Triton's interpreter against torch eager on the same CPU.

GPU (when torch.cuda.is_available()): each kernel family against torch on the same GPU and
against the roofline (measured copy bandwidth and matmul peak), and training steps against
torch eager and torch.compile, with peak memory. Without a GPU that part is skipped with one
line saying so.

Timing: warm-up calls first, then the median of many; inputs are random (never zeros) and
rotated between calls; on the GPU, CUDA events, and enough input sets that the bytes touched
before a set comes back exceed the L2 cache (so caches do not flatter). torch runs on one CPU
thread (the interpreter's NumPy work does too): on a small shared machine two threads stall
at random (see benchmarks/train.py).

    chainrule bench [--quick] [--models logreg resnet18] [--out DIR] [--no-torch-compile]

Writes DIR/bench.json and DIR/bench.md (default: benchmarks/results of this checkout).
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

SEED, OPTIMIZER, LR, CLASSES = 0, "adam", 1e-2, 10        # chainrule train's defaults
ZOO_MODELS = ("logreg", "mlp", "lenet", "resnet")
MODELS = (*ZOO_MODELS, "resnet18")
RESNET_STAGES = (64, 128, 256, 512)                       # benchmarks/compile_time.py's ResNet-18
RESNET_INPUT = (8, 3, 64, 64)
ROTATE = 4                                                # distinct batches cycled through on the CPU
TORCH_THREADS = 1
COMPILE_GOAL = 10.0                                       # torch.compile cold / chainrule compile, ResNet-18
NO_GPU = ("no GPU on this machine (torch.cuda.is_available() is False): the GPU part (kernels against "
          "cuBLAS/cuDNN/torch and the roofline, training steps against torch eager and torch.compile) was skipped")


# -- the models ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """A model and the batches it trains on: `name` picks the network (make_network)."""
    name: str
    input_shape: tuple            # one example, without the batch dimension
    batch: int

    def build(self):
        """The network, built with the seed every side starts from."""
        return make_network(self.name).init(SEED, input_shape=self.input_shape)

    def batches(self, count=ROTATE):
        """`count` random batches (x uniform in [0, 1) like the digits, y random labels), for rotation."""
        rng = np.random.default_rng(SEED)
        return [(rng.uniform(0, 1, (self.batch, *self.input_shape)).astype(np.float32),
                 rng.integers(0, CLASSES, self.batch)) for _ in range(count)]


CPU_WORKLOADS = {**{name: Workload(name, (1, 8, 8), 64) for name in ZOO_MODELS},
                 "resnet18": Workload("resnet18", RESNET_INPUT[1:], RESNET_INPUT[0])}


def resnet18_network(cifar=False):
    """ResNet-18 as ops.layers: a 7x7/2 stem and 3x3/2 max pool (cifar: a 3x3/1 stem, no pool),
    4 stages x 2 basic blocks of 64/128/256/512 channels, batch norm, 1x1 convolutions on the
    skip where the shape changes, global average pool, a linear layer to 10 classes."""
    from ops import layers as L

    if cifar:
        layers = [L.Conv2d(3, 64, 3, padding=1, bias=False), L.BatchNorm2d(64), L.ReLU()]
    else:
        layers = [L.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), L.BatchNorm2d(64), L.ReLU(),
                  L.MaxPool2d(3, 2, 1)]
    channels = 64
    for stage, width in enumerate(RESNET_STAGES):
        for block in range(2):
            stride = 2 if block == 0 and stage > 0 else 1
            body = [L.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), L.BatchNorm2d(width),
                    L.ReLU(), L.Conv2d(width, width, 3, padding=1, bias=False), L.BatchNorm2d(width)]
            skip = None
            if stride != 1 or channels != width:
                skip = [L.Conv2d(channels, width, 1, stride=stride, bias=False), L.BatchNorm2d(width)]
            layers += [L.Residual(body, skip), L.ReLU()]
            channels = width
    return L.Sequential(*layers, L.GlobalAvgPool2d(), L.Dense(channels, CLASSES))


def make_network(name):
    """An unbuilt layer model: a zoo network, "resnet18" or "resnet18_cifar"."""
    from .zoo import network

    if name.startswith("resnet18"):
        return resnet18_network(cifar=name == "resnet18_cifar")
    return network(name)


def chainrule_step(model, work, backend, **options):
    """The model's whole training step compiled as `chainrule train` compiles it: step(x, y).
    options: compile's autotune and replay (default: on for a GPU, off for the interpreter)."""
    import compiler as C
    import ops as O

    from .train import OPTIMIZERS

    return C.compile_train_step(model, O.cross_entropy, OPTIMIZERS[OPTIMIZER](LR),
                                O.spec((work.batch, *work.input_shape)), O.spec((work.batch,), "int64"),
                                backend=backend, **options)


def torch_step(model, device, compiled=False):
    """The torch twin's training step (NumPy batch in, loss out, as fit's loop calls chainrule's),
    in eager mode or through torch.compile (default mode; the optimizer step stays eager)."""
    import torch

    from .torch_twins import torch_loss, torch_optimizer, torch_train_step, torch_twin

    twin = torch_twin(model).to(device).train()
    forward = torch.compile(twin) if compiled else twin
    return torch_train_step(forward, torch_optimizer(OPTIMIZER, twin.parameters(), LR), torch_loss(), device)


# -- measuring -------------------------------------------------------------------------------------------

def median_seconds(run, warmup, repeat, cuda=False):
    """The median over `repeat` timed calls run(k), after `warmup` untimed ones; k counts the
    calls, so run(k) picks its rotated input with k. cuda: CUDA events around each call (the
    GPU's time, launch gaps included), else the wall clock."""
    for k in range(warmup):
        run(k)
    samples = []
    for k in range(warmup, warmup + repeat):
        if cuda:
            import torch

            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            run(k)
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            run(k)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def paired_seconds(run_a, run_b, warmup, repeat):
    """Medians of run_a and run_b timed in turns (a, b, a, b, ...): on a shared machine the
    speed drifts by 10-20 % over a minute, which timing one after the other would read as a
    difference between them."""
    samples = ([], [])
    for k in range(warmup + repeat):
        for run, kept in zip((run_a, run_b), samples):
            start = time.perf_counter()
            run(k)
            if k >= warmup:
                kept.append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def rotating(step, batches):
    """run(k) for median_seconds: the k-th call trains on batch k mod len(batches)."""
    return lambda k: step(*batches[k % len(batches)])


@contextlib.contextmanager
def cold_kernel_cache():
    """An empty kernel cache, and no kernel imported yet, for the body: a cold compile. The
    cache folder lives as long as the body (interpreted kernels read their files) and the
    previous cache and imported kernels are back afterwards."""
    from .executors import kernel_cache

    folder = tempfile.mkdtemp(prefix="chainrule-bench-")
    saved_env, saved_modules = os.environ.get("CHAINRULE_CACHE_DIR"), dict(kernel_cache._modules)
    os.environ["CHAINRULE_CACHE_DIR"] = folder
    kernel_cache._modules.clear()
    try:
        yield folder
    finally:
        kernel_cache._modules.clear()
        kernel_cache._modules.update(saved_modules)
        if saved_env is None:
            os.environ.pop("CHAINRULE_CACHE_DIR", None)
        else:
            os.environ["CHAINRULE_CACHE_DIR"] = saved_env
        shutil.rmtree(folder, ignore_errors=True)


def warm_up():
    """Import torch and Triton and load one kernel before timing anything: otherwise the first
    compile of the process would count those imports as its "lower" pass."""
    import compiler as C
    import ops as O

    with cold_kernel_cache():
        C.compile(lambda x: O.exp(x), O.spec((4,)), backend="interpret")


@contextlib.contextmanager
def torch_threads(count):
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def machine():
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_json(path, data):
    """Write atomically (runtime/checkpoint.py's atomic_file): a reader never sees half a file."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path, text):
    from .checkpoint import atomic_file

    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def ratio(a, b):
    """a / b, or None when either was not measured."""
    return None if a is None or b is None else a / b


def geomean(values):
    values = [v for v in values if v is not None]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


# -- CPU -------------------------------------------------------------------------------------------------

def cpu_row(work, repeat, torch_compile):
    """One model's CPU figures (see the module docstring)."""
    model = work.build()
    batches = work.batches()
    eager = torch_step(model, "cpu")                     # the twin starts from the weights the step starts from
    with cold_kernel_cache():
        step = chainrule_step(model, work, backend="interpret")
        report = step.program.report()
        # the same step with every matmul and conv kernel's block sizes timed, replayed from a recording
        tuned = chainrule_step(work.build(), work, backend="interpret", autotune=True, replay=True)
        interpreter, tuned_seconds = paired_seconds(rotating(step, batches), rotating(tuned, batches),
                                                    warmup=2, repeat=repeat)
    tunings = tuned.program.executor.tunings
    seconds = {**report["compile_seconds"], "total": sum(report["compile_seconds"].values())}
    eager_seconds = median_seconds(rotating(eager, batches), warmup=3, repeat=max(4 * repeat, 5))
    cold = torch_compile_cold(work) if torch_compile else None
    cold_seconds = cold.get("cold_seconds") if cold else None
    return {"parameters": model.num_parameters(), "batch": work.batch, "input_shape": list(work.input_shape),
            "compile_seconds": seconds,
            "kernels": report["kernels"], "unfused_kernels": report["unfused_kernels"],
            "unfused_over_kernels": report["unfused_kernels"] / report["kernels"],
            "dram_bytes": report["dram_bytes"], "min_dram_bytes": report["min_dram_bytes"],
            "dram_over_min": report["dram_bytes"] / report["min_dram_bytes"],
            "arena_bytes": report["arena_bytes"], "live_lower_bound_bytes": report["live_lower_bound_bytes"],
            "arena_over_lower_bound": report["arena_bytes"] / report["live_lower_bound_bytes"],
            "interpreter_step_seconds": interpreter, "torch_eager_step_seconds": eager_seconds,
            "interpreter_over_eager": interpreter / eager_seconds,
            "tuned_step_seconds": tuned_seconds, "default_over_tuned": interpreter / tuned_seconds,
            "autotune_seconds": tuned.program.compile_seconds.get("autotune", 0.0),
            "tuned_kernels": len(tunings), "tuning_changed": sum(t.chosen != 0 for t in tunings),
            "torch_compile": cold, "torch_compile_cold_over_compile": ratio(cold_seconds, seconds["total"])}


def torch_compile_cold(work, timeout=600):
    """torch.compile's cold time to the first training step of `work` (one of CPU_WORKLOADS), in a fresh
    Python process with an empty TORCHINDUCTOR_CACHE_DIR, so that nothing an earlier compile
    left (in this process or on disk) flatters it. Returns torch_compile_child's record plus
    the child's whole wall time, or {"error": ...}."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))      # so the child imports runtime
    with tempfile.TemporaryDirectory(prefix="chainrule-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        code = ("import sys; from runtime.bench import CPU_WORKLOADS, torch_compile_child; "
                "torch_compile_child(CPU_WORKLOADS[sys.argv[1]])")
        command = [sys.executable, "-c", code, work.name]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"torch.compile took over {timeout} s"}
        wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": f"torch.compile failed (exit {done.returncode}): {done.stderr.strip()[-600:]}"}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": wall}


def torch_compile_child(work):
    """In the fresh process: print {"cold_seconds", "steady_step_seconds"} as the last line.
    cold_seconds runs from torch.compile(twin) to the end of the first step (forward, backward,
    optimizer step: Dynamo's tracing, AOTAutograd, Inductor's code generation and the C++
    compiles); imports (torch, Dynamo, Inductor) are done before the clock starts, as the
    chainrule side's imports are (warm_up)."""
    import torch
    import torch._dynamo  # noqa: F401   imported before the clock starts
    import torch._inductor.compile_fx  # noqa: F401

    torch.set_num_threads(TORCH_THREADS)
    model, batches = work.build(), work.batches()
    start = time.perf_counter()
    step = torch_step(model, "cpu", compiled=True)
    step(*batches[0])
    cold = time.perf_counter() - start
    steady = median_seconds(rotating(step, batches), warmup=1, repeat=5)
    print(json.dumps({"cold_seconds": cold, "steady_step_seconds": steady}))


def cpu_suite(names, repeat, torch_compile, progress=None):
    """{model: cpu_row} for the models named, on TORCH_THREADS torch threads."""
    warm_up()
    rows = {}
    with torch_threads(TORCH_THREADS):
        for name in names:
            rows[name] = cpu_row(CPU_WORKLOADS[name], repeat, torch_compile)
            if progress:
                progress.update(1, model=name)
    return rows


# -- GPU: kernel families against torch and the roofline -----------------------------------------------

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
    import torch
    import torch.nn.functional as F

    import ops as O
    from ops import primitives as P

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
    import torch.nn.functional as F

    import ops as O

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
        import compiler as C
        import ops as O

        from .executors.triton import TritonExecutor

        graph = C.trace(case.fn, *[O.spec(shape, dtype) for shape, dtype in case.inputs])
        if case.grad:
            graph = C.grad_graph(graph, case.grad, seed="input")
        self.graph = C.simplify(graph)
        self.executor = TritonExecutor(self.graph, target)

    def bind(self, tensors):
        """(run, outputs) for one input set (in graph-input order): run() launches every kernel,
        with its output buffers allocated here, once (a recording, runtime/executors/replay.py, launched one
        by one); outputs() reads the graph's outputs."""
        import torch

        from .executors.replay import Recording

        ex = self.executor
        if ex.arena is None:
            ex.arena = torch.empty(ex.plan.arena_bytes, dtype=torch.uint8, device=ex.device)
        recording = Recording(ex, inputs=dict(zip(self.graph.inputs, tensors)), capture=False)
        return recording.launch_all, lambda: recording.outputs


def case_inputs(case, device, generator):
    """One random input set (the cotangent last for a VJP case), and its torch runner: a
    function returning the case's outputs in our graph's order ([value, *gradients])."""
    import torch

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
    import torch

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
    import torch

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
    from compiler.codegen import Target

    ours = OurKernels(case, Target(device=device, interpret=device != "cuda", allow_tf32=case.precision == "tf32"))
    bound = [ours.bind(tensors) for tensors in sets]
    seconds = median_seconds(lambda k: bound[k % len(bound)][0](), warmup, repeat, cuda=device == "cuda")
    run, outputs = bound[0]
    run()
    return seconds, outputs()


def measure_peaks(quick):
    """The roofline's two roofs on this GPU: copy bandwidth (bytes read + written per second,
    a 1 GiB copy) and matmul throughput per precision (torch's n^3 matmul, n = 8192)."""
    import torch

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


# -- GPU: training steps against torch eager and torch.compile ----------------------------------------

def measure_gpu_step(make_step, batches, warmup, repeat):
    """Median seconds per step (CUDA events) and peak bytes allocated while the step is built
    and run (torch.cuda.max_memory_allocated, less what was allocated before)."""
    import torch

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
    import torch

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
    import torch

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
    import torch

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
    import torch

    return len(kernel_cases(quick)) + len(gpu_workloads(names, quick)) if torch.cuda.is_available() else 0


# -- goals -----------------------------------------------------------------------------------------------

def goal(text, value, target, at_least=True, why_missing="not measured"):
    met = None if value is None else (value >= target if at_least else value <= target)
    return {"goal": text, "target": f"{'>=' if at_least else '<='} {target:g}", "value": value, "met": met,
            **({"note": why_missing} if value is None else {})}


def goals(cpu, gpu):
    """The issue's goals, each with its measured value and yes / NO (None: not measured)."""
    resnet = cpu.get("resnet18", {})
    found = [goal("ResNet-18-sized training step: torch.compile cold start / chainrule compile (CPU)",
                  resnet.get("torch_compile_cold_over_compile"), COMPILE_GOAL,
                  why_missing="needs resnet18 and torch.compile")]
    if "skipped" in gpu:
        return found

    def speed(families, label=None):
        return geomean(r.get("speed_vs_torch") for r in gpu["kernels"]
                       if r["family"] in families and (label is None or r["case"] == label))

    rows = gpu["training"]
    found += [goal(f"matmul 4096^3 {p} vs cuBLAS", speed({"matmul"}, f"4096^3 {p}"), 0.9)
              for p in ("fp32", "tf32", "fp16")]
    found += [goal("conv2d forward vs cuDNN (geometric mean)", speed({"conv2d"}), 0.7),
              goal("conv2d backward vs cuDNN (geometric mean)",
                   speed({"conv2d_grad_input", "conv2d_grad_weight"}), 0.5),
              goal("softmax+cross-entropy and norms vs torch eager (geometric mean)",
                   speed({"softmax_cross_entropy", "batch_norm", "layer_norm"}), 1.3),
              goal("training step vs torch eager (geometric mean)", geomean(r["speed_vs_eager"] for r in rows), 1.5),
              goal("training step vs torch.compile (geometric mean)",
                   geomean(r.get("speed_vs_torch_compile") for r in rows), 1.0),
              goal("peak memory / torch eager's (geometric mean)",
                   geomean(r["peak_memory_vs_eager"] for r in rows), 0.8, at_least=False)]
    return found


# -- tables ----------------------------------------------------------------------------------------------

@dataclass
class Table:
    """Rows of already formatted cells, printed as aligned text or as a Markdown table."""
    title: str
    columns: list
    rows: list
    notes: list = field(default_factory=list)

    def text(self):
        widths = [max(len(str(r[i])) for r in [self.columns, *self.rows]) for i in range(len(self.columns))]

        def line(cells):
            return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))
        head = line(self.columns)
        return "\n".join([self.title, head, "-" * len(head), *map(line, self.rows), *self.notes])

    def markdown(self):
        rows = [self.columns, ["---"] + ["---:"] * (len(self.columns) - 1), *self.rows]
        body = "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)
        notes = "".join(f"\n- {n}" for n in self.notes)
        return f"### {self.title}\n\n{body}\n{notes}\n"


def sec(x):
    """Seconds, 4 significant figures (or - when not measured)."""
    return "-" if x is None else f"{x:.4g}"


def times(x):
    return "-" if x is None else f"{x:.3g}x"


def yes_no(met):
    return {True: "yes", False: "NO", None: "not measured"}[met]


def cpu_tables(rows):
    passes = list(dict.fromkeys(p for r in rows.values() for p in r["compile_seconds"] if p != "total"))
    compile_rows, fusion_rows, step_rows = [], [], []
    for name, r in rows.items():
        tc = r["torch_compile"] or {}
        cold = tc.get("cold_seconds")
        compile_rows.append([name, f"{r['parameters']:,}", *(sec(r["compile_seconds"].get(p)) for p in passes),
                             sec(r["compile_seconds"]["total"]), sec(cold) if "error" not in tc else "failed",
                             times(r["torch_compile_cold_over_compile"])])
        fusion_rows.append([name, r["kernels"], r["unfused_kernels"], times(r["unfused_over_kernels"]),
                            f"{r['dram_over_min']:.3f}", f"{r['arena_over_lower_bound']:.3f}"])
        step_rows.append([name, f"{r['batch']}x{'x'.join(map(str, r['input_shape']))}",
                          sec(r["interpreter_step_seconds"]), sec(r["torch_eager_step_seconds"]),
                          times(r["interpreter_over_eager"]), sec(r["tuned_step_seconds"]),
                          times(r["default_over_tuned"]), f"{r['tuning_changed']} of {r['tuned_kernels']}",
                          sec(r["autotune_seconds"])])
    return [
        Table("CPU: compile seconds per pass (cold kernel cache) vs torch.compile's cold start to the first step",
              ["model", "params", *passes, "total", "torch.compile s", "torch.compile / ours"], compile_rows,
              ["the whole training step (forward, backward, Adam update) is traced as one function: 'trace' "
               "includes autodiff and the optimizer;",
               "torch.compile: the torch twin in a fresh process, empty inductor cache; imports excluded on both "
               "sides"]),
        Table("CPU: fusion and memory of the training step",
              ["model", "kernels", "unfused", "unfused / kernels", "dram / min", "arena / lower bound"], fusion_rows,
              ["dram / min: bytes all kernels move over compulsory traffic; arena / lower bound: the memory plan "
               "over the most bytes live at once"]),
        Table(f"CPU: seconds per training step (median; torch on {TORCH_THREADS} thread)",
              ["model", "batch", "interpreter s", "torch eager s", "interpreter / eager", "tuned+replay s",
               "default / tuned", "choices changed", "tuning s"], step_rows,
              ["tuned+replay: compile(autotune=True, replay=True) under the interpreter: every matmul and conv "
               "kernel's block sizes timed at compile time (tuning s), launches replayed from a recording; "
               "choices changed: kernels launched with another config than the code generator's pick"])]


def kernel_table(gpu):
    """The kernel families: our time and torch's, speed, each against the roofline, our error."""
    rows = [[r["family"], r["case"], sec(r["ours_seconds"] and r["ours_seconds"] * 1e3),
             sec(r["torch_seconds"] * 1e3), times(r.get("speed_vs_torch")),
             f"{r['ours_roofline_fraction']:.0%}" if r.get("ours_roofline_fraction") else "-",
             f"{r['torch_roofline_fraction']:.0%}",
             f"{r['max_rel_error']:.1e}" if "max_rel_error" in r else r.get("ours_error", "")[:60]]
            for r in gpu["kernels"]]
    peaks = gpu["peaks"]
    roofs = (f"roofline: copy {peaks['copy_bytes_per_second'] / 1e9:.0f} GB/s; matmul "
             + ", ".join(f"{p} {f / 1e12:.1f} TFLOP/s" for p, f in peaks["matmul_flops"].items()))
    return Table(f"GPU ({gpu['device']}): kernel families (median of {gpu['repeat']}, rotated inputs)",
                 ["family", "case", "ours ms", "torch ms", "speed", "ours % roof", "torch % roof", "rel error"],
                 rows, [roofs + "; speed = torch time / our time"])


def training_table(gpu):
    sides = [s for s in ("chainrule", "torch_eager", "torch_compile") if any(s in r for r in gpu["training"])]
    ablations = [s for s in ("chainrule_no_graph", "chainrule_untuned") if any(s in r for r in gpu["training"])]

    def cell(r, side, key, scale, fmt):
        if side not in r:
            return "-"
        return "failed" if "error" in r[side] else fmt.format(r[side][key] * scale)
    rows = [[r["model"], r["batch"], *(cell(r, s, "seconds_per_step", 1e3, "{:.4g}") for s in sides),
             *(cell(r, s, "peak_bytes", 2 ** -20, "{:.1f}") for s in sides),
             times(r["speed_vs_eager"]), times(r["speed_vs_torch_compile"]), times(r["peak_memory_vs_eager"]),
             *(times(r.get(key)) for key in ("cuda_graph_gain", "autotune_gain")[:len(ablations)])]
            for r in gpu["training"]]
    return Table("GPU: training step (Adam, IEEE float32), ms per step and peak MiB",
                 ["model", "batch", *(f"{s} ms" for s in sides), *(f"{s} MiB" for s in sides), "vs eager",
                  "vs compile", "mem / eager", *["CUDA graph gain", "autotune gain"][:len(ablations)]], rows,
                 ["CUDA graph gain: our step without replay / with it; autotune gain: our step untuned / tuned; "
                  "errors, if any, are in bench.json"])


def goal_table(found):
    rows = [[g["goal"], g["target"], times(g["value"]) if g["value"] is not None else "-",
             yes_no(g["met"]) + (f": {g['note']}" if "note" in g else "")] for g in found]
    return Table("Goals", ["goal", "target", "measured", "met"], rows)


def all_tables(result):
    gpu = result["gpu"]
    gpu_part = [] if "skipped" in gpu else [kernel_table(gpu), training_table(gpu)]
    return [*cpu_tables(result["cpu"]), *gpu_part, goal_table(result["goals"])]


def markdown(result, tables):
    m = result["machine"]
    head = (f"# chainrule bench\n\n{'Quick run (`--quick`). ' if result['quick'] else ''}"
            f"Python {m['python']}, torch {m['torch']}, {m['cpu_count']} CPUs ({m['platform']}); "
            f"GPU: {m['gpu'] or 'none'}.\n"
            "Written by `chainrule bench` (runtime/bench.py); the figures are in bench.json.\n")
    skipped = f"\n### GPU\n\n{result['gpu']['skipped']}\n" if "skipped" in result["gpu"] else ""
    return head + "".join(f"\n{t.markdown()}" for t in tables[:-1]) + skipped + f"\n{tables[-1].markdown()}"


# -- the command -----------------------------------------------------------------------------------------

def default_out():
    """benchmarks/results of the checkout runtime/ sits in, else ./benchmarks/results."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = root if os.path.isdir(os.path.join(root, "benchmarks")) else os.getcwd()
    return os.path.join(base, "benchmarks", "results")


def add_arguments(parser):
    parser.add_argument("--quick", action="store_true",
                        help="one small model (logreg unless --models), fewer repeats, the smallest GPU cases")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None,
                        help=f"CPU models (default: all: {' '.join(MODELS)}); on a GPU, resnet18 also means a "
                             "CIFAR ResNet-18")
    parser.add_argument("--out", default=None, help="folder for bench.json and bench.md (default: benchmarks/results)")
    parser.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                        help="skip torch.compile (its cold start on the CPU, its training steps on the GPU)")


def run(quick=False, models=None, out=None, torch_compile=True):
    """The suite: prints the tables, writes bench.json and bench.md into `out`; returns the result."""
    from .progress import Progress

    names = list(models or (["logreg"] if quick else MODELS))
    out = out or default_out()
    progress = Progress(len(names) + gpu_tasks(names, quick), "bench", out=sys.stderr)
    cpu = cpu_suite(names, repeat=2 if quick else 5, torch_compile=torch_compile, progress=progress)
    gpu = gpu_suite(names, quick, torch_compile, progress)
    progress.close()
    result = {"benchmark": "bench", "quick": quick, "machine": machine(),
              "settings": {"optimizer": OPTIMIZER, "lr": LR, "torch_threads": TORCH_THREADS,
                           "torch_compile": torch_compile},
              "cpu": cpu, "gpu": gpu, "goals": goals(cpu, gpu)}
    tables = all_tables(result)
    print("\n\n".join(t.text() for t in tables))
    write_json(os.path.join(out, "bench.json"), result)
    write_text(os.path.join(out, "bench.md"), markdown(result, tables))
    print(f"\nwrote {os.path.join(out, 'bench.json')} and bench.md")
    return result
