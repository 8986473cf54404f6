"""What the benchmarks report and how: the goals (each measured value against its target), the
tables (aligned text for the terminal, Markdown for bench.md), the machine the run was on,
and atomic JSON and text files (a reader never sees half a file).
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field

from compiler.files import atomic_file

from .timing import TORCH_THREADS, geomean


def machine():
    """Python, platform, CPUs, torch's version and the GPU, for the report's header."""
    import torch  # heavy: only a benchmark run imports it

    return {"python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_json(path, data):
    """Write atomically (compiler/files.py): a reader never sees half a file."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path, text):
    with atomic_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)


# -- goals -----------------------------------------------------------------------------------------------

COMPILE_GOAL = 10.0                                       # torch.compile cold / chainrule compile, ResNet-18


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
            "Written by `chainrule bench` (runtime/bench/); the figures are in bench.json.\n")
    skipped = f"\n### GPU\n\n{result['gpu']['skipped']}\n" if "skipped" in result["gpu"] else ""
    return head + "".join(f"\n{t.markdown()}" for t in tables[:-1]) + skipped + f"\n{tables[-1].markdown()}"
