"""Program.dump(dir): the files docs/artifacts.md lists, deterministic, and a run.py that runs."""
import os
import re
import subprocess
import sys

import numpy as np

import compiler as C
from compiler.render import find_dot
from runtime.training.zoo import ZOO

DRAWN = "svg" if find_dot() else "dot"          # without graphviz the graphs are written as their .dot source
ARTIFACTS = ["00_trace.py", "01_joint.py", "02_simplified.py", "03_fusion.txt", "04_memory.txt", "05_saved.txt", "06_autotune.txt",
             "run.py", f"forward.{DRAWN}", f"backward.{DRAWN}", f"kernels.{DRAWN}", "memory.svg"]


def _logreg_step(backend, batch=16):
    model = ZOO["logreg"]
    params = model.init(np.random.default_rng(0))
    return C.compile(model.loss, *model.specs(params, batch), grad_argnums=tuple(range(len(params))),
                     backend=backend)


def _files(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def _contents(folder):
    out = {}
    for name in _files(folder):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


def test_dump_writes_exactly_the_listed_files_deterministically(tmp_path):
    first = _logreg_step("interpret")
    written = first.dump(tmp_path / "a")
    files = _files(tmp_path / "a")
    kernels = [f for f in files if f.startswith("kernels" + os.sep)]
    assert sorted(f for f in files if f not in kernels) == sorted(ARTIFACTS)
    assert len(kernels) == first.report()["kernels"]
    assert all(re.fullmatch(r"\d\d_\w+\.py", os.path.basename(k)) for k in kernels)
    assert sorted(os.path.relpath(p, tmp_path / "a") for p in written) == files
    _logreg_step("interpret").dump(tmp_path / "b")                   # compiled again: the same bytes
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")


def test_the_reference_backend_dumps_no_kernels_and_no_run_script(tmp_path):
    _logreg_step("reference").dump(tmp_path)
    assert _files(tmp_path) == sorted(set(ARTIFACTS) - {"run.py", "06_autotune.txt"})


def _run(folder, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, os.path.join(folder, "run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_script_reproduces_the_step_against_the_reference(tmp_path):
    step = _logreg_step("interpret")
    step.dump(tmp_path / "step")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _run(tmp_path / "step", cwd=elsewhere)                  # run from another folder
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for name in ("00_fwd_matmul.py", "value", "grad_w", "grad_b"):
        assert name in out
    error = float(re.search(r"^max relative error: (\S+)", out, re.MULTILINE).group(1))
    assert 0 <= error < 1e-5
    again = _run(tmp_path / "step", cwd=tmp_path / "step")
    assert again.returncode == 0 and again.stdout == out              # deterministic text


def test_run_script_fails_when_a_kernel_forgets_its_output(tmp_path):
    _logreg_step("interpret", batch=4).dump(tmp_path)
    last = sorted((tmp_path / "kernels").iterdir())[-1]             # the weight gradient's matmul
    with open(last, "a") as f:
        f.write("\n\ndef launch(*buffers):       # launches nothing: its output stays poisoned\n    pass\n")
    result = _run(tmp_path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^max relative error: inf \(FAILED", result.stdout, re.MULTILINE), result.stdout
