"""The `chainrule` command line."""
from __future__ import annotations

import argparse
import sys


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
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run

        if args.epochs < 1 or args.batch_size < 1 or args.lr <= 0:
            parser.error("--epochs and --batch-size must be at least 1 and --lr positive")
        result = run(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     show_graphs=not args.quiet)
        return 0 if result["gradient_error"] < 1e-5 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
