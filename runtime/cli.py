"""The `chainrule` command line."""
from __future__ import annotations

import argparse
import sys

import numpy as np

import compiler as C
from ops.errors import ChainruleError

from .bench import add_arguments as add_bench_arguments, run as run_bench
from .demo import run as run_demo
from .training.loop import train_command
from .training.zoo import get


def main(argv=None):
    parser = argparse.ArgumentParser(prog="chainrule", description="An educational autodiff compiler.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="trace an MLP on the digits, print its forward and backward graphs, "
                                            "check its gradients and train it")
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--lr", type=float, default=0.5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="do not print the graphs")
    kernels = commands.add_parser("kernels", help="write every generated Triton kernel of a model's training step")
    kernels.add_argument("model", help="a zoo model (logreg, mlp, lenet, resnet) or path/to/file.py:function")
    kernels.add_argument("--out", required=True, help="the folder to write (its numbered files are replaced)")
    kernels.add_argument("--batch-size", type=int, default=64)
    kernels.add_argument("--backend", default="interpret", choices=["triton", "interpret"])
    kernels.add_argument("--autotune", action="store_true",
                         help="time each matmul and conv kernel's block sizes and keep the fastest (always on a GPU); "
                              "06_autotune.txt shows the times")
    train = commands.add_parser("train", help="train a model on the digits, the whole step compiled into kernels")
    train.add_argument("model", nargs="?", default="lenet",
                       help="logreg, mlp, lenet, resnet, autoencoder, or path/to/file.py:function returning layers")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--lr", type=float, default=None, help="default: 0.01 (adam, rmsprop), 0.05 (sgd)")
    train.add_argument("--optimizer", default="adam", choices=["adam", "sgd", "rmsprop"])
    train.add_argument("--backend", default=None, choices=["triton", "interpret", "reference"],
                       help="default: triton (the GPU if there is one, else Triton's interpreter)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--patience", type=int, default=None, help="stop after this many epochs without improvement")
    train.add_argument("--out", default=None, help="write learning curves, a report, a checkpoint, graphs, kernels")
    graph = commands.add_parser("graph", help="draw a model's training step: forward, backward, kernels, memory")
    graph.add_argument("model", help="a zoo model (logreg, mlp, lenet, resnet) or path/to/file.py:function")
    graph.add_argument("--out", required=True, help="the folder to write forward, backward, kernels and memory into")
    graph.add_argument("--format", default="svg", choices=["svg", "png", "pdf", "dot"])
    graph.add_argument("--batch-size", type=int, default=64)
    graph.add_argument("--collapse", default="auto", choices=["auto", "none", "1", "2"],
                       help="draw each call of a composite or layer as one box (auto: for large graphs)")
    bench = commands.add_parser("bench", help="the benchmark suite: compile, fusion, memory and step time against "
                                              "torch (and, on a GPU, kernels and training steps); writes JSON and "
                                              "Markdown")
    add_bench_arguments(bench)
    args = parser.parse_args(argv)

    if args.command == "kernels":
        return write_kernels(args.model, args.out, args.batch_size, args.backend, args.autotune or None)
    if args.command == "train":
        if args.epochs < 1 or args.batch_size < 1 or (args.lr is not None and args.lr <= 0):
            parser.error("--epochs and --batch-size must be at least 1 and --lr positive")
        try:
            train_command(args.model, args.epochs, args.batch_size, args.lr, args.optimizer, args.backend,
                          args.seed, args.out, args.patience)
        except ChainruleError as e:
            print(f"chainrule: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "graph":
        collapse = {"auto": "auto", "none": None}.get(args.collapse, args.collapse)
        return draw_graphs(args.model, args.out, args.format, args.batch_size, collapse)

    if args.command == "bench":
        run_bench(quick=args.quick, models=args.models, out=args.out, torch_compile=args.torch_compile)
        return 0

    if args.command == "demo":
        if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
            parser.error("--epochs and --batch-size must be at least 1 and --lr positive")
        result = run_demo(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          show_graphs=not args.quiet)
        return 0 if result["gradient_error"] < 1e-5 else 1
    return 0


def _training_step(model_name, batch_size, backend, autotune=None):
    """(model, its compiled training step), or None after saying why on stderr."""
    try:
        model = get(model_name)
    except ChainruleError as e:
        print(f"chainrule: {e}", file=sys.stderr)
        return None
    params = model.init(np.random.default_rng(0))
    return model, C.compile(model.loss, *model.specs(params, batch_size), grad_argnums=tuple(range(len(params))),
                            backend=backend, autotune=autotune)


def draw_graphs(model_name, out, fmt, batch_size, collapse):
    found = _training_step(model_name, batch_size, "reference")
    if found is None:
        return 2
    model, step = found
    for path in step.render(out, fmt=fmt, collapse=collapse):
        print(f"  wrote {path}")
    return 0


def write_kernels(model_name, out, batch_size, backend, autotune=None):
    found = _training_step(model_name, batch_size, backend, autotune)
    if found is None:
        return 2
    model, step = found
    written = step.dump(out)
    report = step.report()
    print(f"{model.name}: {report['nodes']['forward']} forward ops, {report['nodes']['simplified']} ops in the "
          f"training step, {report['kernels']} kernels")
    for path in written:
        print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
