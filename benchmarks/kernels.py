"""Generated kernels, measured.

CPU (always): one LeNet-sized training step (batch 64, 1x8x8 digits: loss and gradients of
every parameter) through the generated Triton kernels under the interpreter, against the
NumPy reference executor on the same step. Goal: under 2 s per step.

GPU (when CUDA is available): each kernel family against torch on the same GPU and against
the roofline, as measured by `chainrule bench` (runtime/bench/gpu.py: gpu_kernels): matmul vs
cuBLAS (fp32, tf32, fp16) at 1024^3-8192^3, conv2d forward and both backward convolutions
vs cuDNN on LeNet, ResNet-18 and CIFAR shapes, max pooling, batch norm, layer norm and
softmax + cross-entropy forward + backward (CUDA events, warm-up, median, rotated inputs).

    python benchmarks/kernels.py [--repeat N] [--out benchmarks/results/kernels.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import compiler as C  # noqa: E402
from runtime.training import zoo  # noqa: E402
from runtime.bench.gpu import gpu_kernels  # noqa: E402
from runtime.bench.report import kernel_table, write_json  # noqa: E402


def cpu_training_step(repeat):
    model = zoo.ZOO["lenet"]
    rng = np.random.default_rng(0)
    params = model.init(rng)
    x = rng.uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    argnums = tuple(range(len(params)))
    rows = {}
    for backend in ("reference", "interpret"):
        start = time.perf_counter()
        step = C.compile(model.loss, *params, x, y, grad_argnums=argnums, backend=backend)
        compile_s = time.perf_counter() - start
        step(*params, x, y)                                  # warm-up: first launches rewrite kernels
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            step(*params, x, y)
            times.append(time.perf_counter() - start)
        rows[backend] = {"compile_s": compile_s, "step_s": statistics.median(times),
                         "kernels": step.report()["kernels"]}
    rows["interpret_over_reference"] = rows["interpret"]["step_s"] / rows["reference"]["step_s"]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "kernels.json"))
    args = parser.parse_args(argv)

    result = {"benchmark": "kernels", "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                                  "platform": platform.platform()}}
    cpu = cpu_training_step(args.repeat)
    result["cpu_lenet_step"] = cpu
    print("CPU: one LeNet training step (batch 64, loss + all gradients)")
    print(f"  {'backend':<12} {'compile s':>10} {'step s':>8} {'kernels':>8}")
    for backend in ("reference", "interpret"):
        row = cpu[backend]
        print(f"  {backend:<12} {row['compile_s']:>10.2f} {row['step_s']:>8.3f} {row['kernels']:>8}")
    goal = "yes" if cpu["interpret"]["step_s"] < 2.0 else "NO"
    print(f"  interpreter / reference: {cpu['interpret_over_reference']:.1f}x; interpreter under 2 s: {goal}")

    import torch

    if torch.cuda.is_available():
        result["gpu"] = gpu_kernels(quick=False, warmup=3, repeat=args.repeat)
        print("\n" + kernel_table(result["gpu"]).text())
    else:
        result["gpu"] = None
        print("\nGPU: none here (torch.cuda.is_available() is False): the GPU table was not measured")

    write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
