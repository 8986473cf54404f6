"""Generated kernels, measured.

CPU (always): one LeNet-sized training step (batch 64, 1x8x8 digits: loss and gradients of
every parameter) through the generated Triton kernels under the interpreter, against the
NumPy reference executor on the same step. Goal: under 2 s per step.

GPU (when CUDA is available): each kernel family against torch on the same GPU, as a ratio
of times measured in the same run (CUDA events, warm-up, median of repeats):
matmul vs cuBLAS (fp32 with TF32 off, and TF32) at 1024^3-4096^3, conv2d forward and both
backward convolutions vs cuDNN on ResNet shapes, max pooling, a row reduction.

    python benchmarks/kernels.py [--repeat N] [--out benchmarks/results/kernels.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import compiler as C  # noqa: E402
import ops as O  # noqa: E402
from runtime import zoo  # noqa: E402


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


def gpu_tables(repeat):
    import torch
    import torch.nn.functional as F

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        samples = []
        for _ in range(repeat):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            samples.append(begin.elapsed_time(end) / 1000)
        return statistics.median(samples)

    def ours(fn, *arrays, tf32=False):
        """Our kernels for fn, launched directly on device tensors (no NumPy round trip)."""
        from compiler.codegen import Target
        from runtime.triton_executor import TritonExecutor

        graph = C.simplify(C.trace(fn, *arrays))
        executor = TritonExecutor(graph, Target(device="cuda", interpret=False, allow_tf32=tf32))
        inputs = [torch.from_numpy(a).cuda() for a in arrays]
        env = dict(zip(graph.inputs, inputs))

        def run():
            for kernel, module in zip(executor.schedule.kernels, executor.modules):
                ins = [env[v.base] for v in kernel.inputs.values() if hasattr(v, "base")]
                outs = [torch.empty(n.shape, device="cuda", dtype=inputs[0].dtype) for n in kernel.outputs]
                module.launch(*ins, *outs)
                env.update(zip(kernel.outputs, outs))
        return run

    rows = []
    rng = np.random.default_rng(0)
    for n in (1024, 2048, 4096):
        a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        for tf32 in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            theirs = timed(lambda: ta @ tb)
            mine = timed(ours(lambda a, b: a @ b, a, b, tf32=tf32))
            rows.append({"kernel": f"matmul {n}^3 {'tf32' if tf32 else 'fp32'}", "ours_s": mine, "torch_s": theirs,
                         "speed_vs_torch": theirs / mine})
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for (batch, cin, hw, cout, k, s) in ((64, 64, 56, 64, 3, 1), (64, 128, 28, 256, 3, 2), (64, 256, 14, 256, 3, 1)):
        x = rng.standard_normal((batch, cin, hw, hw)).astype(np.float32)
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.05
        tx, tw = torch.from_numpy(x).cuda(), torch.from_numpy(w).cuda()
        ty = F.conv2d(tx, tw, stride=s, padding=1)
        g = torch.randn_like(ty)
        name = f"{batch}x{cin}x{hw}x{hw} * {cout}x{cin}x{k}x{k} s{s}"
        forward = (lambda x, w: O.conv2d(x, w, stride=s, padding=1), lambda: F.conv2d(tx, tw, stride=s, padding=1))
        grad_in = (lambda g, w: O.primitives.conv2d_grad_input(g, w, in_shape=x.shape, stride=(s, s), padding=(1, 1),
                                                               dilation=(1, 1)),
                   lambda: torch.nn.grad.conv2d_input(tx.shape, tw, g, stride=s, padding=1))
        grad_w = (lambda x, g: O.primitives.conv2d_grad_weight(x, g, weight_shape=w.shape, stride=(s, s),
                                                               padding=(1, 1), dilation=(1, 1)),
                  lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, g, stride=s, padding=1))
        gn = g.cpu().numpy()
        for label, (fn, reference), arrays in (("conv2d", forward, (x, w)), ("conv2d_grad_input", grad_in, (gn, w)),
                                               ("conv2d_grad_weight", grad_w, (x, gn))):
            mine, theirs = timed(ours(fn, *arrays)), timed(reference)
            rows.append({"kernel": f"{label} {name}", "ours_s": mine, "torch_s": theirs,
                         "speed_vs_torch": theirs / mine})
    x = rng.standard_normal((64, 64, 112, 112)).astype(np.float32)
    tx = torch.from_numpy(x).cuda()
    for label, fn, reference in (("max_pool2d 3x3 s2", lambda x: O.max_pool2d(x, 3, 2, 1),
                                  lambda: F.max_pool2d(tx, 3, 2, 1)),
                                 ("sum over rows", lambda x: O.sum(x.reshape(64 * 64, 112 * 112), 1),
                                  lambda: tx.reshape(64 * 64, -1).sum(1))):
        mine, theirs = timed(ours(fn, x)), timed(reference)
        rows.append({"kernel": f"{label} {x.shape}", "ours_s": mine, "torch_s": theirs,
                     "speed_vs_torch": theirs / mine})
    return {"device": torch.cuda.get_device_name(), "rows": rows}


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
        result["gpu"] = gpu_tables(args.repeat)
        print(f"\nGPU: {result['gpu']['device']} (speed vs torch = torch time / our time)")
        for row in result["gpu"]["rows"]:
            print(f"  {row['kernel']:<58} {row['ours_s'] * 1e3:>9.3f} ms {row['torch_s'] * 1e3:>9.3f} ms "
                  f"{row['speed_vs_torch']:>6.2f}x")
    else:
        result["gpu"] = None
        print("\nGPU: none here (torch.cuda.is_available() is False): the GPU table was not measured")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
