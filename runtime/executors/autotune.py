"""Autotuning: each matmul and conv kernel's block sizes chosen by timing them on the device.

Which tile is fastest depends on the device and on the shapes, and no rule predicts it well:
a GEMM with a short k wants wide tiles, a tall thin one narrow ones, and the interpreter
(where one program's Python overhead is the cost) wants as few programs as fit. So the code
generator writes the candidates into the kernel file (`CONFIGS` for a GPU and
`INTERPRETER_CONFIGS` for the interpreter, its own pick first) and
this module times each one at compile time, on random inputs of the kernel's shapes, into
fresh output buffers (a kernel that updates a parameter in place updates nothing here), and
keeps the fastest (unless the code generator's own pick is within the timing noise of it,
MARGIN). A candidate that fails (too much shared memory for this GPU) is logged
and skipped.

The choice is cached next to the kernel files, under the kernel's digest (its text holds
its shapes and its candidates) and the device's name: compiling the same kernel on the same
machine again times nothing. A cache entry that does not parse, or lists other candidates,
is measured again and rewritten. Every compile logs its choices in `06_autotune.txt`.

On a GPU autotuning is on by default (`compile(..., autotune=False)` turns it off: each
kernel then takes its first candidate). Under the interpreter it is off by default, since
timing every candidate costs seconds there, and `autotune=True` turns it on."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

from compiler.files import write_atomic
from ops.errors import BackendError

from . import kernel_cache

# A candidate replaces the code generator's pick only when it is faster by more than this: the
# interpreter's timings wander by ~10 % from run to run on a shared CPU (CUDA events by ~1 %),
# and a choice made on noise is a change with no gain (the zoo ResNet-18 under the interpreter,
# tuned without a margin: 23 of 53 choices changed, the step 3 % slower).
MARGIN = {"cuda": 0.02, "cpu": 0.10}


@dataclass
class Tuning:
    """One kernel's autotuning: the candidates, the seconds each took (None: it failed), the choice."""

    kernel: str
    configs: list
    seconds: list
    chosen: int
    cached: bool = False                       # read from the cache, not measured by this compile
    errors: dict = field(default_factory=dict)  # candidate index -> why it failed

    @property
    def config(self):
        return self.configs[self.chosen]


def device_name(target):
    """The device a choice holds for: the GPU's name, or the interpreter on this CPU."""
    import triton  # optional heavy dependency: loading kernels needs it, compiling them does not

    if target.device == "cuda":
        import torch  # optional heavy dependency: only a run on the device needs it

        return f"{torch.cuda.get_device_name()} triton {triton.__version__}"
    return f"interpreter {platform.machine()} triton {triton.__version__}"


def cache_path(text, target):
    key = kernel_cache.digest(f"{text}\n# {device_name(target)}")[:32]
    folder = kernel_cache.usable_folder(os.path.join(kernel_cache.cache_dir(), "tuned"),
                                        os.path.join(kernel_cache.fallback_dir(), "tuned"))
    return os.path.join(folder, f"t_{key}.json")


def candidates(module, target):
    """A kernel module's configs for the target's device, or None when it has nothing to choose."""
    configs = kernel_cache.launch_configs(module, target.interpret)
    return configs if len(configs) > 1 else None


def tune(name, text, module, make_args, target, runs=None, clock=None):
    """Choose among the module's configs for the target (`CONFIGS` on a GPU, `INTERPRETER_CONFIGS`
    under the interpreter) for the kernel whose source is `text`. make_args() returns fresh
    (inputs, outputs) tensors to launch it with; clock(launch) returns seconds per launch."""
    configs = candidates(module, target)
    path = cache_path(text, target)
    cached = _read(path, configs)
    if cached is not None:
        return Tuning(name, configs, cached["seconds"], cached["chosen"], cached=True, errors=cached.get("errors", {}))
    clock = clock or (_gpu_clock if target.device == "cuda" else _cpu_clock)
    runs = runs or (20 if target.device == "cuda" else 3)
    inputs, outputs = make_args()
    seconds, errors = [], {}
    for i, config in enumerate(configs):
        try:
            seconds.append(clock(lambda: module.launch(*inputs, *outputs, **config), runs))
        except Exception as error:       # e.g. out of shared memory on this GPU: not a candidate here
            seconds.append(None)
            errors[i] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    timed = [i for i, s in enumerate(seconds) if s is not None]
    if not timed:
        raise BackendError(f"autotuning {name}: every candidate failed: {errors}")
    fastest = min(timed, key=lambda i: seconds[i])
    chosen = 0 if seconds[0] is not None and seconds[0] <= seconds[fastest] * (1 + MARGIN[target.device]) else fastest
    write_atomic(path, json.dumps({"kernel": name, "device": device_name(target), "configs": configs,
                                                "seconds": seconds, "chosen": chosen, "errors": errors}, indent=1))
    return Tuning(name, configs, seconds, chosen, errors=errors)


def _read(path, configs):
    """A cache entry for these candidates, or None (missing, unreadable, or for other candidates)."""
    try:
        with open(path) as f:
            entry = json.load(f)
        if entry["configs"] == configs and 0 <= entry["chosen"] < len(configs) and \
                entry["seconds"][entry["chosen"]] is not None:
            entry["errors"] = {int(i): e for i, e in entry.get("errors", {}).items()}
            return entry
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None                    # measured again, and the entry rewritten
    return None


def _cpu_clock(launch, runs):
    launch()                                   # the first launch also builds the kernel
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        launch()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _gpu_clock(launch, runs):
    """CUDA events around each launch after a warm-up (the first compiles); the median."""
    import torch  # optional heavy dependency: only a run on the device needs it

    launch()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(runs):
        start.record()
        launch()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def text(tunings, target, enabled):
    """06_autotune.txt: for every kernel with a choice, each candidate's time and the one kept."""
    lines = [f"# autotuning on {device_name(target)}"]
    which = "INTERPRETER_CONFIGS" if target.interpret else "CONFIGS"
    if not enabled:
        lines += ["# off (the default under the interpreter; compile(..., autotune=True) turns it on):",
                  f"# every kernel launches with the first of its {which}, the code generator's pick"]
        return "\n".join(lines) + "\n"
    if not tunings:
        return "\n".join(lines + ["# no kernel in this program has block sizes to choose"]) + "\n"
    lines += [f"# each kernel with a choice timed with each of its {which} on random inputs; the fastest kept,",
              f"# unless the first (the code generator's pick) is within {MARGIN[target.device]:.0%} of it",
              f"# choices are cached under {os.path.join(kernel_cache.cache_dir(), 'tuned')}", ""]
    for tuning in tunings:
        where = "from the cache (measured by an earlier compile)" if tuning.cached else "measured by this compile"
        lines.append(f"{tuning.kernel}: {where}")
        keys = list(tuning.configs[0])
        width = max(len(k) for k in keys)
        for i, (config, seconds) in enumerate(zip(tuning.configs, tuning.seconds)):
            shown = "  ".join(f"{k}={config[k]:<{max(4, width - len(k))}}" for k in keys)
            took = f"{seconds * 1e3:9.3f} ms" if seconds is not None else f"   failed: {tuning.errors.get(i, '?')}"
            mark = "   <- chosen" if i == tuning.chosen else ("   (the untuned default)" if i == 0 else "")
            lines.append(f"    {shown}  {took}{mark}")
        lines.append("")
    return "\n".join(lines)
