"""`chainrule train` for each zoo model on the digits: test accuracy and wall time.

The whole training step (forward, backward, optimizer update) runs as generated Triton
kernels: under Triton's interpreter on a machine without a GPU, compiled on a GPU. Each
model trains with `chainrule train`'s defaults (Adam, lr 0.01, batch 64, 15 epochs, the
best validation epoch's weights kept) on the same train/val/test split.

    python benchmarks/train.py [--models lenet mlp] [--epochs 15] [--backend interpret]

Goals: lenet >= 97 % test accuracy, mlp >= 96 %, logreg >= 93 %; `chainrule train lenet`
(the defaults) under 3 minutes on this machine without a GPU. (The GPU comparison against
torch eager and torch.compile belongs to benchmarks of issue 8.)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from compile_time import write_json  # noqa: E402
from runtime.datasets import digits_split  # noqa: E402
from runtime.train import fit  # noqa: E402
from runtime.zoo import RECONSTRUCTS, network, networks  # noqa: E402

GOALS = {"lenet": 0.97, "mlp": 0.96, "logreg": 0.93}
LENET_SECONDS = 180.0
DEFAULT_OUT = os.path.join(HERE, "results", "train.json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[m for m in networks() if m not in RECONSTRUCTS])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--backend", default="interpret")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    data = digits_split(seed=0, image=True)
    rows = {}
    print(f"{'model':8s} {'params':>7s} {'kernels':>7s} {'unfused':>7s} {'step s':>7s} {'total s':>8s} "
          f"{'best ep':>7s} {'test acc':>8s}  goal")
    for name in args.models:
        model = network(name).init(0, input_shape=(1, 8, 8))
        start = time.perf_counter()
        result = fit(model, data, epochs=args.epochs, batch_size=64, optimizer="adam", backend=args.backend,
                     seed=0, reconstruct=name in RECONSTRUCTS, log=lambda line: None, progress=False)
        total = time.perf_counter() - start
        step = result["step"]
        report = step.program.report()
        steps = step.steps
        goal = GOALS.get(name)
        ok = "" if goal is None else ("yes" if result["test_accuracy"] >= goal else "NO") + f" (>= {goal:.0%})"
        rows[name] = {"parameters": model.num_parameters(), "kernels": report["kernels"],
                      "unfused_kernels": report["unfused_kernels"], "seconds": total,
                      "seconds_per_step": result["seconds"] / max(steps, 1), "best_epoch": result["best_epoch"],
                      "test_accuracy": result["test_accuracy"], "goal": goal}
        print(f"{name:8s} {rows[name]['parameters']:7d} {report['kernels']:7d} {report['unfused_kernels']:7d} "
              f"{rows[name]['seconds_per_step']:7.3f} {total:8.1f} {result['best_epoch']:7d} "
              f"{result['test_accuracy']:8.4f}  {ok}")
    if "lenet" in rows:
        print(f"lenet, 15 epochs, in {rows['lenet']['seconds']:.0f} s: under {LENET_SECONDS:.0f} s: "
              f"{'yes' if rows['lenet']['seconds'] < LENET_SECONDS else 'NO'}")
    write_json(args.out, {"benchmark": "train", "backend": args.backend, "epochs": args.epochs,
                          "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}, "models": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
