"""`chainrule train` for each zoo model on the digits, against the same training in torch.

The whole training step (forward, backward, optimizer update) runs as generated Triton
kernels: under Triton's interpreter on a machine without a GPU, compiled on a GPU. Each
model trains with `chainrule train`'s defaults (Adam, lr 0.01, batch 64, 15 epochs, the
best validation epoch's weights kept) on the same train/val/test split.

Beside it, on the CPU, the model's torch twin (runtime/training/twins.py: the same layers
and the same initial weights) trains in torch eager with the same optimizer and the same
batches in the same order (`runtime.training.data.batches` drawing from the generator `fit`
seeds), and is tested with its best validation epoch's weights, as `fit` does. Seconds per
step, on both sides: the training run's wall time (the steps, each epoch's validation, the
test) over its number of steps; the ratio is chainrule's over torch's. torch computes on
--threads CPU threads (default 1), and so does the interpreter, whose block operations are
torch CPU ops: on a 2-core machine shared with other work, two threads stalled ~0.45 s at
random steps (torch's resnet step averaged 240 ms instead of 5 ms).

On a GPU (when torch.cuda.is_available()), each model's training step from its initial
weights, on the same batches: chainrule (backend "triton"), torch eager and torch.compile
(default mode) of the twin, with TF32 off on both sides (chainrule computes in IEEE
float32). Each step takes a NumPy batch and gives back the loss, as `fit`'s loop does; time
per step is the median over TIMED_STEPS steps after WARMUP steps (CUDA events); peak memory
is torch.cuda.max_memory_allocated() over the run (chainrule's arena is a torch tensor)
less what was allocated before it.

    python benchmarks/train.py [--models lenet mlp] [--epochs 15] [--backend interpret] [--threads 1]
                               [--out PATH]

Goals: lenet >= 97 % test accuracy, mlp >= 96 %, logreg >= 93 %; `chainrule train lenet`
(the defaults) under 3 minutes on this machine without a GPU.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import compiler as C  # noqa: E402
import ops as O  # noqa: E402
from runtime.bench.gpu import measure_gpu_step  # noqa: E402
from runtime.bench.report import write_json  # noqa: E402
from runtime.training.data import batches, digits_split  # noqa: E402
from runtime.training.loop import OPTIMIZERS, _reconstruction_loss, fit  # noqa: E402
from runtime.training.twins import torch_fit, torch_loss, torch_optimizer, torch_train_step, torch_twin  # noqa: E402
from runtime.training.zoo import RECONSTRUCTS, network, networks  # noqa: E402

GOALS = {"lenet": 0.97, "mlp": 0.96, "logreg": 0.93}
LENET_SECONDS = 180.0
DEFAULT_OUT = os.path.join(HERE, "results", "train.json")
OPTIMIZER, LR, BATCH, SEED = "adam", 1e-2, 64, 0          # chainrule train's defaults
INPUT = (1, 8, 8)
WARMUP, TIMED_STEPS = 10, 50
NO_GPU = "no GPU on this machine: the GPU comparison (torch eager, torch.compile) was skipped"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[m for m in networks() if m not in RECONSTRUCTS])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--backend", default="interpret")
    parser.add_argument("--threads", type=int, default=1, help="torch's CPU threads (torch.set_num_threads)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = digits_split(seed=SEED, image=True)
    print(f"chainrule ({args.backend}) and torch eager on the CPU ({args.threads} thread(s)), {args.epochs} epochs "
          f"(test: accuracy, or mse for an autoencoder; ratio: chainrule s/step over torch s/step)")
    print(f"{'model':11s} {'params':>7s} {'kernels':>7s} {'unfused':>7s} {'best ep':>7s} {'test':>8s} "
          f"{'step s':>8s} {'total s':>8s} | {'torch ep':>8s} {'test':>8s} {'step s':>8s} {'ratio':>7s}  goal")
    rows = {name: train_both(name, data, args.epochs, args.backend) for name in args.models}
    if "lenet" in rows:
        print(f"lenet, {args.epochs} epochs, in {rows['lenet']['seconds']:.0f} s: under {LENET_SECONDS:.0f} s: "
              f"{'yes' if rows['lenet']['seconds'] < LENET_SECONDS else 'NO'}")
    gpu = gpu_comparison(args.models, data["train"])
    write_json(args.out, {"benchmark": "train", "backend": args.backend, "epochs": args.epochs,
                          "optimizer": OPTIMIZER, "lr": LR, "batch_size": BATCH,
                          "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                      "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
                          "models": rows, "gpu": gpu})
    print(f"wrote {args.out}")
    return 0


def _test_score(result, reconstruct):
    return f"{result['test_loss']:8.4f}" if reconstruct else f"{result['test_accuracy']:8.4f}"


def train_both(name, data, epochs, backend):
    """Train the zoo model `name` with chainrule's fit and its torch twin with torch_fit, from
    the same initial weights; print the table's row and return it."""
    model = network(name).init(SEED, input_shape=INPUT)
    twin = torch_twin(model)                     # before fit trains the model: the same start
    reconstruct = name in RECONSTRUCTS
    settings = {"epochs": epochs, "batch_size": BATCH, "optimizer": OPTIMIZER, "lr": LR, "seed": SEED,
                "reconstruct": reconstruct}
    start = time.perf_counter()
    result = fit(model, data, backend=backend, log=lambda line: None, progress=False, **settings)
    total = time.perf_counter() - start
    theirs = torch_fit(twin, data, **settings)
    step = result["step"]
    report = step.program.report()
    per_step = result["seconds"] / max(step.steps, 1)
    torch_per_step = theirs["seconds"] / max(theirs["steps"], 1)
    goal = GOALS.get(name)
    row = {"parameters": model.num_parameters(), "kernels": report["kernels"],
           "unfused_kernels": report["unfused_kernels"], "seconds": total, "seconds_per_step": per_step,
           "best_epoch": result["best_epoch"], "test_loss": result["test_loss"],
           "test_accuracy": result["test_accuracy"], "goal": goal,
           "torch_eager_cpu": {"seconds": theirs["seconds"], "seconds_per_step": torch_per_step,
                               "best_epoch": theirs["best_epoch"], "test_loss": theirs["test_loss"],
                               "test_accuracy": theirs["test_accuracy"]},
           "step_time_vs_torch_eager_cpu": per_step / torch_per_step}
    ok = "" if goal is None else ("yes" if result["test_accuracy"] >= goal else "NO") + f" (>= {goal:.0%})"
    print(f"{name:11s} {row['parameters']:7d} {report['kernels']:7d} {report['unfused_kernels']:7d} "
          f"{result['best_epoch']:7d} {_test_score(result, reconstruct)} {per_step:8.3f} {total:8.1f} | "
          f"{theirs['best_epoch']:8d} {_test_score(theirs, reconstruct)} {torch_per_step:8.4f} "
          f"{row['step_time_vs_torch_eager_cpu']:6.1f}x  {ok}")
    return row


# -- the GPU comparison ---------------------------------------------------------------------------------

def fit_batches(x, y, count):
    """The first `count` batches fit(seed=SEED) trains on, epoch after epoch."""
    rng = np.random.default_rng(SEED)
    epochs = (batches(x, y, BATCH, seed=rng, drop_last=True) for _ in itertools.count())
    return itertools.islice(itertools.chain.from_iterable(epochs), count)


def chainrule_step(name):
    """fit's compiled training step of the zoo model on the GPU (backend "triton")."""
    reconstruct = name in RECONSTRUCTS
    model = network(name).init(SEED, input_shape=INPUT)
    y_spec = O.spec((BATCH, *INPUT)) if reconstruct else O.spec((BATCH,), "int64")
    step = C.compile_train_step(model, _reconstruction_loss if reconstruct else O.cross_entropy,
                                OPTIMIZERS[OPTIMIZER](LR), O.spec((BATCH, *INPUT)), y_spec, backend="triton")
    return lambda x, y: step(x, x if reconstruct else y)[0]


def torch_step(name, compiled):
    """The twin's training step on the GPU, in eager mode or through torch.compile."""
    reconstruct = name in RECONSTRUCTS
    twin = torch_twin(network(name).init(SEED, input_shape=INPUT)).cuda().train()
    if compiled:
        torch._dynamo.reset()            # else every Sequential shares one code object's recompile limit
    forward = torch.compile(twin) if compiled else twin
    return torch_train_step(forward, torch_optimizer(OPTIMIZER, twin.parameters(), LR), torch_loss(reconstruct),
                            "cuda", reconstruct)


RUNNERS = {"chainrule_triton": chainrule_step, "torch_eager": functools.partial(torch_step, compiled=False),
           "torch_compile": functools.partial(torch_step, compiled=True)}


def gpu_comparison(names, train):
    if not torch.cuda.is_available():
        print(NO_GPU)
        return {"skipped": NO_GPU}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = torch.cuda.get_device_name()
    print(f"\nGPU: {device}, one training step (batch {BATCH}): median of {TIMED_STEPS} after {WARMUP} warm-up; "
          "peak MiB allocated")
    print(f"{'model':11s} " + " ".join(f"{runner + ' ms':>20s} {'MiB':>7s}" for runner in RUNNERS))
    rows = {}
    for name in names:
        steps = list(fit_batches(*train, WARMUP + TIMED_STEPS))       # each step its own batch
        rows[name] = {runner: measure_gpu_step(functools.partial(make, name), steps, WARMUP, TIMED_STEPS)
                      for runner, make in RUNNERS.items()}
        print(f"{name:11s} " + " ".join(f"{r['seconds_per_step'] * 1e3:20.3f} {r['peak_bytes'] / 2 ** 20:7.1f}"
                                        for r in rows[name].values()))
    return {"device": device, "tf32": False, "warmup_steps": WARMUP, "timed_steps": TIMED_STEPS, "models": rows}


if __name__ == "__main__":
    sys.exit(main())
