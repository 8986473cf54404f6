"""`chainrule bench` (runtime/bench/): the quick suite prints its tables and writes JSON and
Markdown with consistent ratios; torch.compile's cold start is measured in a fresh process;
the GPU part runs where there is a GPU and is skipped with one clear line where there is
none. The GPU code's pieces that need no CUDA (our kernels launched on device tensors
against torch, the training-step runners, the tables and the goals) run here on the CPU."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from runtime.bench import gpu, report, timing, workloads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_KEYS = {"parameters", "batch", "input_shape", "compile_seconds", "kernels", "unfused_kernels",
            "unfused_over_kernels", "dram_bytes", "min_dram_bytes", "dram_over_min", "arena_bytes",
            "live_lower_bound_bytes", "arena_over_lower_bound", "interpreter_step_seconds",
            "torch_eager_step_seconds", "interpreter_over_eager", "torch_compile", "torch_compile_cold_over_compile",
            "tuned_step_seconds", "default_over_tuned", "autotune_seconds", "tuned_kernels", "tuning_changed"}


def run_bench(out, *flags):
    """`chainrule bench --quick` in a fresh process (it sets torch's threads and the kernel
    cache): (stdout, bench.json, bench.md)."""
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "bench", "--quick", "--out", str(out), *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "bench.json") as f:
        result = json.load(f)
    with open(out / "bench.md") as f:
        return done.stdout, result, f.read()


def check_gpu_part(stdout, result, md):
    if torch.cuda.is_available():
        assert result["gpu"]["kernels"] and result["gpu"]["training"]
        assert "GPU (" in stdout and "kernel families" in md
    else:
        assert result["gpu"] == {"skipped": gpu.NO_GPU}
        assert stdout.count(gpu.NO_GPU) == 1 and gpu.NO_GPU in md


def test_quick_suite_writes_json_and_markdown(tmp_path):
    stdout, result, md = run_bench(tmp_path, "--no-torch-compile")
    assert {"benchmark", "quick", "machine", "settings", "cpu", "gpu", "goals"} <= set(result)
    assert result["quick"] is True and list(result["cpu"]) == ["logreg"]
    row = result["cpu"]["logreg"]
    assert set(row) == ROW_KEYS
    seconds = row["compile_seconds"]
    assert {"trace", "simplify", "lower"} <= set(seconds)
    assert seconds["total"] == pytest.approx(sum(v for k, v in seconds.items() if k != "total"))
    assert row["unfused_over_kernels"] == pytest.approx(row["unfused_kernels"] / row["kernels"]) and \
        row["unfused_over_kernels"] > 1
    assert row["dram_over_min"] == pytest.approx(row["dram_bytes"] / row["min_dram_bytes"])
    assert row["arena_over_lower_bound"] == pytest.approx(row["arena_bytes"] / row["live_lower_bound_bytes"])
    assert row["dram_over_min"] >= 1 and row["arena_over_lower_bound"] >= 1    # neither beats its bound
    assert row["interpreter_over_eager"] == pytest.approx(row["interpreter_step_seconds"]
                                                          / row["torch_eager_step_seconds"])
    assert row["default_over_tuned"] == pytest.approx(row["interpreter_step_seconds"] / row["tuned_step_seconds"])
    assert 0 <= row["tuning_changed"] <= row["tuned_kernels"] and row["autotune_seconds"] >= 0
    assert row["torch_compile"] is None and row["torch_compile_cold_over_compile"] is None
    assert result["goals"][0]["met"] is None                       # no resnet18, no torch.compile
    for title in ("CPU: compile seconds per pass", "CPU: fusion and memory", "CPU: seconds per training step",
                  "Goals"):
        assert title in stdout and f"### {title}" in md
    assert md.startswith("# chainrule bench") and "| logreg | 650 |" in md and "not measured" in md
    check_gpu_part(stdout, result, md)


def test_torch_compile_cold_start_is_measured(tmp_path):
    stdout, result, md = run_bench(tmp_path, "--models", "logreg")
    row = result["cpu"]["logreg"]
    cold = row["torch_compile"]
    assert "error" not in cold, cold
    assert cold["process_seconds"] > cold["cold_seconds"] > cold["steady_step_seconds"] > 0
    assert row["torch_compile_cold_over_compile"] == pytest.approx(cold["cold_seconds"]
                                                                   / row["compile_seconds"]["total"])
    assert f"{row['torch_compile_cold_over_compile']:.3g}x" in stdout
    check_gpu_part(stdout, result, md)


def tiny_cases():
    """One small case of every kernel family: quick under the interpreter."""
    return (gpu.matmul_cases((32,)) + gpu.conv_cases([("tiny", (2, 3, 8, 4, 3, 2, 1))])
            + gpu.row_kernel_cases({"max_pool2d": [(2, 3, 9, 3, 2, 1)], "batch_norm": [(4, 3, 5)],
                                      "layer_norm": [(8, 16)], "softmax_cross_entropy": [(8, 30)]}))


def test_kernel_cases_match_torch():
    """measure_case, on the CPU: our kernels, bound to rotated input sets and launched on the
    tensors directly, compute what torch computes (forward, and the VJP's value and gradients)."""
    peaks = {"matmul_flops": {"fp32": 1e11, "tf32": 1e11, "fp16": 1e11}, "copy_bytes_per_second": 1e10}
    families = set()
    for case in tiny_cases():
        row = gpu.measure_case(case, peaks, "cpu", warmup=0, repeat=1, l2_bytes=1 << 16)
        families.add(row["family"])
        assert row["torch_seconds"] > 0 and row["roofline_seconds"] > 0
        if case.precision == "fp16":               # chainrule has no float16: the row says so
            assert row["ours_seconds"] is None and "float16" in row["ours_error"]
            continue
        assert row["max_rel_error"] < 1e-4, (case.family, case.label, row)
        assert row["speed_vs_torch"] == pytest.approx(row["torch_seconds"] / row["ours_seconds"])
    assert families == {"matmul", "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d", "batch_norm",
                        "layer_norm", "softmax_cross_entropy"}


def test_training_runners_start_from_the_same_weights():
    """gpu_runners' sides (here on the CPU) compute the same first loss on the same batch."""
    work = workloads.Workload("lenet", (1, 8, 8), 8)
    x, y = work.batches(1)[0]
    runners = gpu.gpu_runners(work, torch_compile=False, device="cpu")
    ours, _ = runners["chainrule"]()(x, y)
    assert runners["torch_eager"]()(x, y) == pytest.approx(ours, rel=1e-4)
    for ablation in ("chainrule_no_graph", "chainrule_untuned"):     # the same step, one feature off
        assert runners[ablation]()(x, y)[0] == pytest.approx(ours, rel=1e-6)


def test_resnet18_is_torchvisions_resnet18():
    """The ResNet-18-sized CNN has torchvision's resnet18 parameter count (10 classes); the
    CIFAR variant swaps the 7x7 stem for a 3x3 one."""
    assert workloads.resnet18_network().init(0, input_shape=(3, 64, 64)).num_parameters() == 11_181_642
    assert workloads.resnet18_network(cifar=True).init(0, input_shape=(3, 32, 32)).num_parameters() == \
        11_181_642 - 64 * 3 * (49 - 9)


def fake_gpu_result():
    """What gpu_suite returns, with made-up figures: the tables and goals a GPU run prints."""
    def kernel(family, case, ours, theirs):
        return {"family": family, "case": case, "torch_seconds": theirs, "roofline_seconds": 1e-4,
                "torch_roofline_fraction": 1e-4 / theirs, "ours_seconds": ours, "speed_vs_torch": theirs / ours,
                "ours_roofline_fraction": 1e-4 / ours, "max_rel_error": 1e-6}

    def side(ms, mib):
        return {"seconds_per_step": ms / 1e3, "peak_bytes": mib * 2 ** 20}

    kernels = [kernel("matmul", "4096^3 fp32", 1.0e-3, 0.95e-3), kernel("matmul", "4096^3 tf32", 1.0e-3, 0.5e-3),
               kernel("conv2d", "a", 2e-3, 1e-3), kernel("conv2d_grad_input", "a", 2e-3, 1.2e-3),
               kernel("layer_norm", "b", 1e-4, 2e-4),
               {"family": "matmul", "case": "4096^3 fp16", "torch_seconds": 2e-4, "roofline_seconds": 1e-4,
                "torch_roofline_fraction": 0.5, "ours_seconds": None, "ours_error": "DTypeError: float16"}]
    training = [{"model": "resnet18_cifar", "batch": 128, "chainrule": side(20, 300), "torch_eager": side(40, 500),
                 "torch_compile": side(25, 450), "speed_vs_eager": 2.0, "speed_vs_torch_compile": 1.25,
                 "peak_memory_vs_eager": 0.6, "chainrule_no_graph": side(30, 300), "chainrule_untuned": side(22, 300),
                 "cuda_graph_gain": 1.5, "autotune_gain": 1.1},
                {"model": "lenet", "batch": 256, "chainrule": {"error": "RuntimeError: a kernel failed"},
                 "torch_eager": side(2, 20), "speed_vs_eager": None, "speed_vs_torch_compile": None,
                 "peak_memory_vs_eager": None}]
    return {"device": "Fake GPU", "l2_bytes": 50 << 20, "warmup": 5, "repeat": 50,
            "peaks": {"copy_bytes_per_second": 3e12, "matmul_flops": {"fp32": 5e13, "tf32": 4e14, "fp16": 8e14},
                      "matmul_n": 8192, "copy_bytes": 1 << 30},
            "kernels": kernels, "training": training}


def test_gpu_tables_and_goals():
    fake = fake_gpu_result()
    found = {g["goal"]: g for g in report.goals({}, fake)}
    assert found["matmul 4096^3 fp32 vs cuBLAS"]["met"] is True            # 0.95x >= 0.9x
    assert found["matmul 4096^3 tf32 vs cuBLAS"]["met"] is False
    assert found["matmul 4096^3 fp16 vs cuBLAS"]["met"] is None            # ours did not run
    assert found["conv2d forward vs cuDNN (geometric mean)"]["value"] == pytest.approx(0.5)
    assert found["softmax+cross-entropy and norms vs torch eager (geometric mean)"]["met"] is True
    assert found["training step vs torch.compile (geometric mean)"]["value"] == pytest.approx(1.25)
    assert found["peak memory / torch eager's (geometric mean)"]["met"] is True
    result = {"quick": False, "machine": {"python": "3", "torch": "2", "cpu_count": 2, "platform": "p", "gpu": "Fake"},
              "cpu": {}, "gpu": fake, "goals": list(found.values())}
    tables = report.all_tables(result)
    text = "\n".join(t.text() for t in tables)
    assert "Fake GPU" in text and "DTypeError" in text and "torch_compile ms" in text and "NO" in text
    assert "failed" in text                                               # lenet's chainrule side
    assert "CUDA graph gain" in text and "1.5x" in text and "1.1x" in text
    md = report.markdown(result, tables)
    assert "| resnet18_cifar | 128 |" in md and "skipped" not in md


def test_helpers():
    assert timing.geomean([2.0, 8.0, None]) == pytest.approx(4.0) and timing.geomean([None]) is None
    assert timing.ratio(None, 2.0) is None and timing.ratio(3.0, 2.0) == 1.5
    assert gpu.rotation(1 << 30, 50 << 20) == 2 and gpu.rotation(1 << 20, 50 << 20) == 64
    (x0, y0), (x1, _) = workloads.Workload("mlp", (1, 8, 8), 4).batches(2)
    assert x0.shape == (4, 1, 8, 8) and y0.dtype.kind == "i" and x0.std() > 0 and not np.array_equal(x0, x1)
