"""The `chainrule` command line.

Every subcommand takes its MODEL the same way (`zoo.resolve`: a zoo name or
path/to/file.py:function), checks its output folder before it computes anything, and turns
a misuse into one line on stderr and exit code 2 (as argparse does for a usage error); Ctrl-C
exits with 130 after saying where training stopped and how to resume it."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import compiler as C
from ops.errors import ChainruleError
from ops.source import entry_point

from .bench import add_arguments as add_bench_arguments, run as run_bench
from .demo import run as run_demo
from .training.loop import OPTIMIZERS, RUN_SETTINGS, TrainingInterrupted, load_resume, train_command, training_step
from .training.zoo import RECONSTRUCTS, Model, describe_models, resolve

BACKENDS = ["triton", "interpret", "reference"]
INTERRUPTED = 130                   # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show (None)."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    """The parser of every subcommand; MODEL, --backend, --batch-size and --seed mean the same
    in each."""
    parser = argparse.ArgumentParser(prog="chainrule", description="An educational autodiff compiler.",
                                     formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help):
        return commands.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)

    demo = command("demo", "trace an MLP on the digits, print its forward and backward graphs, check its "
                           "gradients and train it")
    demo.add_argument("--epochs", type=int, default=8, help="epochs of training")
    demo.add_argument("--batch-size", type=int, default=32, help="examples per training step")
    demo.add_argument("--lr", type=float, default=0.5, help="the SGD learning rate")
    demo.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the data split")
    demo.add_argument("--quiet", action="store_true", help="do not print the graphs")

    kernels = command("kernels", "write every generated Triton kernel of a model's training step")
    _add_model(kernels)
    kernels.add_argument("--out", required=True, help="the folder to write (its numbered files are replaced)")
    _add_step_options(kernels, backend="interpret")
    kernels.add_argument("--autotune", action="store_true",
                         help="time each matmul and conv kernel's block sizes and keep the fastest (always on a "
                              "GPU); 06_autotune.txt shows the times")

    train = command("train", "train a model on the digits, the whole step compiled into kernels")
    _add_model(train, default="lenet")
    train.add_argument("--epochs", type=int, default=15, help="epochs of training (the total, when resuming)")
    train.add_argument("--batch-size", type=int, default=64, help="examples per training step")
    train.add_argument("--lr", type=float, default=None,
                       help="the learning rate (default: 0.01 for adam and rmsprop, 0.05 for sgd)")
    train.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS), help="the optimizer")
    train.add_argument("--backend", default=None, choices=BACKENDS,
                       help="where the step runs (default: triton: the GPU if there is one, else Triton's "
                            "interpreter)")
    train.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the split and the shuffle")
    train.add_argument("--patience", type=int, default=None,
                       help="stop after this many epochs without improvement (default: never)")
    train.add_argument("--out", default=None,
                       help="a folder for the learning curves, a report, the checkpoint, graphs and kernels "
                            "(default: write nothing)")
    train.add_argument("--resume", default=None, metavar="DIR",
                       help="continue the run whose --out was DIR from its checkpoint, with its settings "
                            "(and write into DIR unless --out says otherwise; default: a fresh run)")

    graph = command("graph", "draw a model's training step: forward, backward, kernels, memory")
    _add_model(graph)
    graph.add_argument("--out", required=True, help="the folder to write forward, backward, kernels and memory into")
    graph.add_argument("--format", default="svg", choices=["svg", "png", "pdf", "dot"], help="the pictures' format")
    _add_step_options(graph, backend="reference")
    graph.add_argument("--collapse", default="auto", choices=["auto", "none", "1", "2"],
                       help="draw each call of a composite or layer as one box (auto: for large graphs)")

    bench = command("bench", "the benchmark suite: compile, fusion, memory and step time against torch (and, on "
                             "a GPU, kernels and training steps); writes JSON and Markdown")
    add_bench_arguments(bench)
    parser.subcommands = {"demo": demo, "kernels": kernels, "train": train, "graph": graph, "bench": bench}
    return parser


def _add_model(parser, default=None):
    parser.add_argument("model", nargs="?" if default else None, default=default, metavar="MODEL",
                        help=describe_models())


def _add_step_options(parser, backend):
    """The options of the commands that compile a training step without running it."""
    parser.add_argument("--batch-size", type=int, default=64, help="the batch size the step is compiled for")
    parser.add_argument("--backend", default=backend, choices=BACKENDS,
                        help="the backend to compile for (reference: kernels are planned, not generated)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights")


@entry_point
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser.subcommands[args.command], args)
    try:
        return _run(parser, args)
    except TrainingInterrupted as stop:
        print(f"chainrule: {_interrupted_text(stop, args.model)}", file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        print("chainrule: interrupted", file=sys.stderr)
        return INTERRUPTED
    except ChainruleError as e:
        print(f"chainrule: {e}", file=sys.stderr)
        return 2


def _check_arguments(parser, args):
    """Usage errors, found before anything is computed or written: exit code 2."""
    for name in ("epochs", "batch_size"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if getattr(args, "lr", None) is not None and args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if getattr(args, "patience", None) is not None and args.patience < 0:
        parser.error(f"--patience must be at least 0, got {args.patience}")
    if getattr(args, "resume", None) is not None and not os.path.isdir(args.resume):
        parser.error(f"--resume {args.resume}: no such folder (give the --out folder of the run to continue)")
    out = getattr(args, "out", None)
    if out is not None:
        problem = _not_a_folder(out)
        if problem:
            parser.error(f"--out {out}: {problem}")


def _not_a_folder(path):
    """Why `path` cannot be (made into) an output folder, or None: an existing file, or a file
    where one of its parent folders should be."""
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder: give a folder to write into"
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent} is a file, so no folder can be made under it"
    return None


def _run(parser, args):
    if args.command == "kernels":
        return write_kernels(args.model, args.out, args.batch_size, args.backend, args.autotune or None, args.seed)
    if args.command == "graph":
        collapse = {"auto": "auto", "none": None}.get(args.collapse, args.collapse)
        return draw_graphs(args.model, args.out, args.format, args.batch_size, collapse, args.backend, args.seed)
    if args.command == "train":
        return train(parser, args)
    if args.command == "bench":
        run_bench(quick=args.quick, models=args.models, out=args.out, torch_compile=args.torch_compile)
        return 0
    result = run_demo(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      show_graphs=not args.quiet)
    return 0 if result["gradient_error"] < 1e-5 else 1


def train(parser, args):
    """`chainrule train`, or with --resume the continuation of an earlier run."""
    resume = None
    if args.resume is not None:
        resume = load_resume(args.resume, args.model)
        _take_settings(parser.subcommands["train"], args, resume[1])
        args.out = args.out or args.resume
    train_command(args.model, args.epochs, args.batch_size, args.lr, args.optimizer, args.backend, args.seed,
                  args.out, args.patience, resume=resume)
    return 0


def _take_settings(train_parser, args, meta):
    """The resumed run's settings: an option left at its default takes the checkpoint's value;
    one given with another value is refused (the run would not be the same run), except
    --epochs, which may extend it."""
    for name in RUN_SETTINGS:
        given, saved, default = getattr(args, name), meta[name], train_parser.get_default(name)
        option = f"--{name.replace('_', '-')}"
        if given == default:
            setattr(args, name, saved)
        elif given != saved and name != "epochs":
            raise ChainruleError(f"{option} {given}: the run in {args.resume} was trained with {option} {saved}; "
                                 f"a resumed run keeps its settings (leave {option} out)", op="train --resume")


def _interrupted_text(stop, model):
    where = f"interrupted at epoch {stop.epoch}, step {stop.step}"
    if stop.saved_epoch is None:
        hint = "" if stop.out else " (train with --out DIR to keep a checkpoint)"
        return f"{where}; no checkpoint was written{hint}"
    return (f"{where}; the checkpoint of epoch {stop.saved_epoch} is in {stop.out} "
            f"(resume with: chainrule train {model} --resume {stop.out})")


def _training_step(model_name, batch_size, backend, seed, autotune=None):
    """(model, the compiled program of its training step) for `kernels` and `graph`: a Model's
    loss and gradients, or a layer model's whole step (forward, backward, adam's update)."""
    model = resolve(model_name)
    if isinstance(model, Model):
        params = model.init(np.random.default_rng(seed))
        return model.name, C.compile(model.loss, *model.specs(params, batch_size),
                                     grad_argnums=tuple(range(len(params))), backend=backend, autotune=autotune)
    step = training_step(model, batch_size, reconstruct=model_name in RECONSTRUCTS, seed=seed, backend=backend,
                         autotune=autotune)
    return model_name, step.program


def draw_graphs(model_name, out, fmt, batch_size, collapse, backend="reference", seed=0):
    _, program = _training_step(model_name, batch_size, backend, seed)
    for path in program.render(out, fmt=fmt, collapse=collapse):
        print(f"  wrote {path}")
    return 0


def write_kernels(model_name, out, batch_size, backend, autotune=None, seed=0):
    name, program = _training_step(model_name, batch_size, backend, seed, autotune)
    written = program.dump(out)
    report = program.report()
    print(f"{name}: {report['nodes']['forward']} forward ops, {report['nodes']['simplified']} ops in the "
          f"training step, {report['kernels']} kernels")
    for path in written:
        print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
