"""The CPU suite, run on every machine: for each model's whole training step, compile seconds
per pass with a cold kernel cache, torch.compile's cold start in a fresh process, fusion and
memory figures from the compile's report, and seconds per step under Triton's interpreter
(default and autotuned + replayed) against torch eager on the same CPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from .timing import (TORCH_THREADS, cold_kernel_cache, median_seconds, paired_seconds, ratio, rotating, torch_threads,
                     warm_up)
from .workloads import CPU_WORKLOADS, chainrule_step, torch_step


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
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the child imports runtime
    with tempfile.TemporaryDirectory(prefix="chainrule-inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache,
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        code = ("import sys; from runtime.bench.cpu import CPU_WORKLOADS, torch_compile_child; "
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
    import torch  # heavy: only the fresh process that times torch.compile imports it
    import torch._dynamo  # noqa: F401   imported before the clock starts
    import torch._inductor.compile_fx  # noqa: F401   imported before the clock starts

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
