"""How the benchmarks time: the median of many calls after warm-up ones (wall clock, or CUDA
events on a GPU), two steps timed in turns, inputs rotated between calls, a cold kernel
cache for a cold compile, torch on TORCH_THREADS CPU threads, and the ratios the tables
print (a / b, geometric means) that tolerate a figure not measured.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import tempfile
import time

import compiler as C
import ops as O

from ..executors import kernel_cache

TORCH_THREADS = 1                                         # torch's CPU threads while timing (see the suite's doc)


def median_seconds(run, warmup, repeat, cuda=False):
    """The median over `repeat` timed calls run(k), after `warmup` untimed ones; k counts the
    calls, so run(k) picks its rotated input with k. cuda: CUDA events around each call (the
    GPU's time, launch gaps included), else the wall clock."""
    for k in range(warmup):
        run(k)
    samples = []
    for k in range(warmup, warmup + repeat):
        if cuda:
            import torch  # heavy: only a GPU timing imports it

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
    with cold_kernel_cache():
        C.compile(lambda x: O.exp(x), O.spec((4,)), backend="interpret")


@contextlib.contextmanager
def torch_threads(count):
    """torch on `count` CPU threads for the body."""
    import torch  # heavy: only a run that times torch imports it

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def ratio(a, b):
    """a / b, or None when either was not measured."""
    return None if a is None or b is None else a / b


def geomean(values):
    values = [v for v in values if v is not None]
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None
