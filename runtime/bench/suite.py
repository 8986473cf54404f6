"""The whole suite, as `chainrule bench` runs it: its command-line arguments, and `run`, which
runs the CPU suite and (on a GPU) the GPU suite under one progress bar, checks the goals,
prints the tables and writes bench.json and bench.md.
"""
from __future__ import annotations

import os
import sys

from ..progress import Progress
from .cpu import cpu_suite
from .gpu import gpu_suite, gpu_tasks
from .report import all_tables, goals, machine, markdown, write_json, write_text
from .timing import TORCH_THREADS
from .workloads import LR, MODELS, OPTIMIZER


def default_out():
    """benchmarks/results of the checkout runtime/ sits in, else ./benchmarks/results."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
