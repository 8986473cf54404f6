"""What fusion and memory planning buy, model by model, and what the compile costs.

For each zoo model (logreg, mlp, lenet, resnet; batch 64) and the ResNet-18-sized CNN of
benchmarks/compile_time.py (8x3x64x64), one training step (loss and the gradient of every
parameter) is compiled with the "interpret" backend, and its report (Program.report(),
compiler/cost.py, compiler/memory.py, compiler/saved.py) gives:

- kernels launched, fused vs unfused (one kernel per computing node), and their ratio;
- dram_bytes (what all kernels read and write) / min_dram_bytes (compulsory traffic: inputs
  read once, outputs written once, saved values written and read once);
- arena_bytes / live_lower_bound_bytes (most bytes live at once) and / no_reuse_bytes;
- bytes the forward saves for the backward, without and with rematerialization;
- compile seconds per pass (Program.compile_seconds), and the "lower" pass split into
  fusion, lowering, code generation, importing the kernels (a fresh kernel cache: cold) and
  the memory plan.

The zoo steps are also run once through their kernels (Triton's interpreter on the CPU:
the "interpret" backend) and checked against the reference executor; the ResNet-18-sized step is only compiled.

    python benchmarks/fusion_memory.py [--out benchmarks/results/fusion_memory.json]

Goals (yes/no columns): arena <= 1.05 x lower bound and <= 0.5 x no reuse; dram <= 1.3 x
compulsory; at least 3x fewer kernels than unfused; the whole ResNet-18-sized compile
under 3 s. The lb/noreuse column is the lower bound over no reuse: no plan's arena is below
the lower bound, so where that ratio is above 0.5 the "0.5 x no reuse" goal is out of reach
for the program as scheduled (every buffer it writes is live together with most others).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import compiler as C  # noqa: E402
from compile_time import resnet18, resnet18_specs  # noqa: E402
from runtime.executors import kernel_cache  # noqa: E402
from runtime.bench.report import write_json  # noqa: E402
from runtime.bench.timing import cold_kernel_cache, warm_up  # noqa: E402
from runtime.training import zoo  # noqa: E402
from ops.evaluate import run_graph  # noqa: E402

BATCH = 64
DEFAULT_OUT = os.path.join(HERE, "results", "fusion_memory.json")
GOALS = {"arena_over_lower_bound": 1.05, "arena_over_no_reuse": 0.5, "dram_over_min": 1.3, "kernel_ratio": 3.0,
         "resnet18_compile_seconds": 3.0}


def zoo_step(name):
    """(loss function, specs, argnums, arrays) of a zoo model's training step at BATCH."""
    model = zoo.ZOO[name]
    rng = np.random.default_rng(0)
    params = model.init(rng)
    x = rng.uniform(0, 1, (BATCH, 1, 8, 8) if model.image else (BATCH, 64)).astype(np.float32)
    y = rng.integers(0, model.classes, BATCH)
    return model.loss, model.specs(params, BATCH), tuple(range(len(params))), [*params, x, y]


def resnet18_step():
    specs = resnet18_specs()
    return resnet18, specs, tuple(range(2, len(specs))), None       # every parameter; not x, y


def lower_breakdown(graph, target):
    """Seconds of the "lower" pass, step by step (cold kernel cache)."""
    from compiler.codegen import generate
    from compiler.codegen.common import kernel_names
    from compiler.fusion import fuse
    from compiler.lower import lower
    from compiler.memory import plan_memory
    from ops.printer import value_names

    seconds = {}
    start = time.perf_counter()
    plan = fuse(graph)
    seconds["fuse"] = time.perf_counter() - start
    start = time.perf_counter()
    schedule = lower(graph, plan)
    seconds["lower"] = time.perf_counter() - start
    start = time.perf_counter()
    names = kernel_names(value_names(graph))
    sources = [generate(k, names, target) for k in schedule.kernels]
    seconds["codegen"] = time.perf_counter() - start
    with cold_kernel_cache():
        start = time.perf_counter()
        for text in sources:
            kernel_cache.load(text, target.interpret)
        seconds["import"] = time.perf_counter() - start
    start = time.perf_counter()
    plan_memory(schedule)
    seconds["memory_plan"] = time.perf_counter() - start
    return seconds


def bench(name, fn, specs, argnums, arrays):
    """One model's row: compiled with a cold kernel cache, and run from that cache."""
    with cold_kernel_cache():
        return measure(fn, specs, argnums, arrays)


def measure(fn, specs, argnums, arrays):
    from runtime.executors.triton import make_target

    start = time.perf_counter()
    step = C.compile(fn, *specs, grad_argnums=argnums, backend="interpret")
    wall = time.perf_counter() - start
    report = step.report()
    remat = C.compile(fn, *specs, grad_argnums=argnums, backend="reference", remat=True).report()
    row = {"kernels": report["kernels"], "unfused_kernels": report["unfused_kernels"],
           "kernel_ratio": report["unfused_kernels"] / report["kernels"],
           "dram_bytes": report["dram_bytes"], "min_dram_bytes": report["min_dram_bytes"],
           "dram_over_min": report["dram_bytes"] / report["min_dram_bytes"],
           "arena_bytes": report["arena_bytes"], "live_lower_bound_bytes": report["live_lower_bound_bytes"],
           "no_reuse_bytes": report["no_reuse_bytes"],
           "arena_over_lower_bound": report["arena_bytes"] / report["live_lower_bound_bytes"],
           "arena_over_no_reuse": report["arena_bytes"] / report["no_reuse_bytes"],
           "lower_bound_over_no_reuse": report["live_lower_bound_bytes"] / report["no_reuse_bytes"],
           "saved_bytes": report["saved_bytes"], "saved_bytes_remat": remat["saved_bytes"],
           "nodes": report["nodes"],
           "compile_seconds": {**report["compile_seconds"], "total": sum(report["compile_seconds"].values())},
           "compile_wall_seconds": wall,
           "lower_seconds": lower_breakdown(step.graph, make_target("interpret"))}
    row["goals"] = {"arena": row["arena_over_lower_bound"] <= GOALS["arena_over_lower_bound"]
                    and row["arena_over_no_reuse"] <= GOALS["arena_over_no_reuse"],
                    "dram": row["dram_over_min"] <= GOALS["dram_over_min"],
                    "kernels": row["kernel_ratio"] >= GOALS["kernel_ratio"]}
    if arrays is None:
        row["ran"] = False
        row["goals"]["compile"] = row["compile_seconds"]["total"] < GOALS["resnet18_compile_seconds"]
    else:
        start = time.perf_counter()
        got = step(*arrays)
        row["step_seconds"] = time.perf_counter() - start
        flat = [got[0], *got[1]]
        want = run_graph(step.graph, [np.asarray(a).astype(s.dtype) for a, s in zip(arrays, step.specs)])
        row["ran"] = True
        row["max_rel_error"] = max(float(np.linalg.norm(g - w) / (np.linalg.norm(w) or 1.0))
                                   for g, w in zip(flat, want))
    return row


def yes(flag):
    return "yes" if flag else "NO"


def mb(n):
    return f"{n / 1e6:.3f}"


def table(results):
    head = (f"{'model':9s} {'kernels':>7s} {'unfused':>7s} {'ratio':>5s}  {'dram MB':>8s} {'min MB':>8s} "
            f"{'d/min':>5s}  {'arena MB':>8s} {'a/lb':>5s} {'a/noreuse':>9s} {'lb/noreuse':>10s}  {'saved MB':>8s} {'remat':>7s}  "
            f"{'arena':>5s} {'dram':>4s} {'kern':>4s}")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        g = r["goals"]
        lines.append(f"{name:9s} {r['kernels']:7d} {r['unfused_kernels']:7d} {r['kernel_ratio']:5.2f}  "
                     f"{mb(r['dram_bytes']):>8s} {mb(r['min_dram_bytes']):>8s} {r['dram_over_min']:5.2f}  "
                     f"{mb(r['arena_bytes']):>8s} {r['arena_over_lower_bound']:5.3f} {r['arena_over_no_reuse']:9.3f} "
                     f"{r['lower_bound_over_no_reuse']:10.3f}  "
                     f"{mb(r['saved_bytes']):>8s} {mb(r['saved_bytes_remat']):>7s}  "
                     f"{yes(g['arena']):>5s} {yes(g['dram']):>4s} {yes(g['kernels']):>4s}")
    lines += ["goals: arena <= 1.05 x lower bound and <= 0.5 x no reuse; dram <= 1.3 x compulsory (d/min);",
              "       unfused / kernels >= 3.  saved: bytes the forward keeps for the backward, without and with "
              "remat.",
              "       lb/noreuse: where the lower bound itself is above 0.5 x no reuse, no plan meets the second "
              "arena goal", ""]
    head = (f"{'model':9s} {'trace':>6s} {'autodiff':>8s} {'simplify':>8s} {'lower':>6s} {'total':>6s}   "
            f"{'fuse':>6s} {'lower':>6s} {'codegen':>7s} {'import':>6s} {'memory':>6s}   {'step s':>6s} {'error':>8s}")
    lines += ["compile seconds per pass (Program.compile_seconds); the lower pass split, cold kernel cache;",
              "one step through the kernels and its max relative error against the reference", head, "-" * len(head)]
    for name, r in results.items():
        c, lo = r["compile_seconds"], r["lower_seconds"]
        ran = f"{r['step_seconds']:6.2f} {r['max_rel_error']:8.1e}" if r["ran"] else f"{'-':>6s} {'not run':>8s}"
        lines.append(f"{name:9s} {c['trace']:6.3f} {c['autodiff']:8.3f} {c['simplify']:8.3f} {c['lower']:6.3f} "
                     f"{c['total']:6.3f}   {lo['fuse']:6.3f} {lo['lower']:6.3f} {lo['codegen']:7.3f} "
                     f"{lo['import']:6.3f} {lo['memory_plan']:6.3f}   {ran}")
    if "resnet18" in results:
        total = results["resnet18"]["compile_seconds"]["total"]
        lines.append(f"ResNet-18-sized compile: {total:.2f} s, under {GOALS['resnet18_compile_seconds']:g} s: "
                     f"{yes(results['resnet18']['goals']['compile'])}")
    return "\n".join(lines)


MODELS = {**{name: (lambda name=name: zoo_step(name)) for name in zoo.ZOO}, "resnet18": resnet18_step}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args(argv)
    warm_up()
    results = {name: bench(name, *MODELS[name]()) for name in args.models}
    print(table(results))
    write_json(args.out, {"benchmark": "fusion_memory", "batch": BATCH, "backend": "interpret",
                          "goals": GOALS, "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                                      "platform": platform.platform()},
                          "models": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
