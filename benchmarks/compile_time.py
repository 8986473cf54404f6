"""How long does chainrule take to compile a real-sized model, pass by pass?

Two models, written with the DSL and taking their parameters as function arguments:

- mlp100:   100 Dense layers of width 256 with relu, cross_entropy at the end, batch 64.
- resnet18: a ResNet-18-sized CNN (stem conv 7x7/2 + max_pool, 4 stages x 2 basic blocks
            with 64/128/256/512 channels, batch_norm(training=True), 1x1 downsampling
            convs on the skip, adaptive_avg_pool2d(1), linear to 10 classes,
            cross_entropy) on an 8x3x64x64 batch: the network `chainrule bench` builds
            as layers (runtime/bench/workloads.py), written here as one function of its parameters.

Shapes are symbolic: nothing is executed. For each model we time C.trace, C.grad_graph
(with respect to every parameter) and C.simplify separately, take the median of
--repeat runs, and report node counts (forward, joint, simplified).

    python benchmarks/compile_time.py [--repeat N] [--out PATH]

The goal: trace + autodiff + simplify under 1 s for each model.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import ops as O
import compiler as C
from runtime.bench.report import write_json
from runtime.bench.workloads import RESNET_INPUT, RESNET_STAGES

GOAL_SECONDS = 1.0
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "compile_time.json")


# -- the models ------------------------------------------------------------------------------

MLP_DEPTH, MLP_WIDTH, MLP_BATCH, CLASSES = 100, 256, 64, 10


def mlp(x, y, *params):
    """params: weight_1, bias_1, ..., weight_100, bias_100 (torch's [out, in] weights)."""
    h = x
    for i in range(0, len(params), 2):
        h = O.linear(h, params[i], params[i + 1])
        if i + 2 < len(params):
            h = O.relu(h)
    return O.cross_entropy(h, y)


def mlp_specs():
    params = []
    for layer in range(MLP_DEPTH):
        out = CLASSES if layer == MLP_DEPTH - 1 else MLP_WIDTH
        params += [O.spec((out, MLP_WIDTH)), O.spec((out,))]
    return [O.spec((MLP_BATCH, MLP_WIDTH)), O.spec((MLP_BATCH,), "int64")] + params


def _resnet_layout():
    """The parameter list of the ResNet, in order: (kind, shape) pairs."""
    layout = [("conv", (64, 3, 7, 7)), ("bn", 64)]
    channels = 64
    for stage, width in enumerate(RESNET_STAGES):
        for block in range(2):
            downsample = block == 0 and (stage > 0 or channels != width)
            layout += [("conv", (width, channels, 3, 3)), ("bn", width),
                       ("conv", (width, width, 3, 3)), ("bn", width)]
            if downsample:
                layout += [("conv", (width, channels, 1, 1)), ("bn", width)]
            channels = width
    layout += [("fc", (CLASSES, channels)), ("fc_bias", (CLASSES,))]
    return layout


def resnet18(x, y, *params):
    """params in the order of _resnet_layout(): conv weights, and a (weight, bias) pair per
    batch norm."""
    p = iter(params)

    def conv_bn(h, stride, padding):
        h = O.conv2d(h, next(p), stride=stride, padding=padding)
        return O.batch_norm(h, None, None, next(p), next(p), training=True)

    h = O.relu(conv_bn(x, 2, 3))
    h = O.max_pool2d(h, 3, 2, 1)
    channels = 64
    for stage, width in enumerate(RESNET_STAGES):
        for block in range(2):
            stride = 2 if block == 0 and stage > 0 else 1
            downsample = block == 0 and (stage > 0 or channels != width)
            out = O.relu(conv_bn(h, stride, 1))
            out = conv_bn(out, 1, 1)
            skip = conv_bn(h, stride, 0) if downsample else h
            h = O.relu(out + skip)
            channels = width
    h = O.flatten(O.adaptive_avg_pool2d(h, 1), 1)
    return O.cross_entropy(O.linear(h, next(p), next(p)), y)


def resnet18_specs():
    params = []
    for kind, shape in _resnet_layout():
        if kind == "bn":
            params += [O.spec((shape,)), O.spec((shape,))]
        else:
            params.append(O.spec(shape))
    return [O.spec(RESNET_INPUT), O.spec((RESNET_INPUT[0],), "int64")] + params


MODELS = {"mlp100": (mlp, mlp_specs), "resnet18": (resnet18, resnet18_specs)}


# -- timing ----------------------------------------------------------------------------------

def compile_once(fn, specs):
    """One compile, pass by pass: (seconds per stage, the three graphs)."""
    seconds = {}
    start = time.perf_counter()
    forward = C.trace(fn, *specs)
    seconds["trace"] = time.perf_counter() - start
    wrt = tuple(range(2, len(specs)))            # every parameter; not x, y
    start = time.perf_counter()
    joint = C.grad_graph(forward, wrt)
    seconds["autodiff"] = time.perf_counter() - start
    start = time.perf_counter()
    simplified = C.simplify(joint)
    seconds["simplify"] = time.perf_counter() - start
    return seconds, (forward, joint, simplified)


def bench(name, repeat):
    fn, make_specs = MODELS[name]
    specs = make_specs()
    runs = []
    for _ in range(repeat):
        seconds, graphs = compile_once(fn, specs)
        runs.append(seconds)
    forward, joint, simplified = graphs
    stages = {stage: statistics.median(r[stage] for r in runs) for stage in ("trace", "autodiff", "simplify")}
    total = statistics.median(sum(r.values()) for r in runs)
    return {"parameters": len(specs) - 2,
            "nodes": {"forward": len(forward.nodes), "joint": len(joint.nodes), "simplified": len(simplified.nodes)},
            "ops": {"forward": forward.num_ops, "joint": joint.num_ops, "simplified": simplified.num_ops},
            "seconds": {**stages, "total": total},
            "under_goal": total < GOAL_SECONDS}


def machine():
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}


def table(results):
    head = (f"{'model':10s} {'params':>6s} {'fwd':>6s} {'joint':>6s} {'simpl':>6s}  "
            f"{'trace':>7s} {'autodiff':>8s} {'simplify':>8s} {'total':>7s}  goal<{GOAL_SECONDS:g}s")
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        n, s = r["nodes"], r["seconds"]
        lines.append(f"{name:10s} {r['parameters']:6d} {n['forward']:6d} {n['joint']:6d} {n['simplified']:6d}  "
                     f"{s['trace']:7.3f} {s['autodiff']:8.3f} {s['simplify']:8.3f} {s['total']:7.3f}  "
                     f"{'yes' if r['under_goal'] else 'NO'}")
    lines.append("nodes: every node of the graph, inputs and constants included; seconds: median of runs")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per model; the median is reported")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    results = {name: bench(name, args.repeat) for name in args.models}
    print(table(results))
    write_json(args.out, {"benchmark": "compile_time", "repeat": args.repeat, "goal_seconds": GOAL_SECONDS,
                          "machine": machine(), "models": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
