"""The kernel cache: files named by the hash of their text, written atomically, checked
before they are imported."""
import os
import subprocess
import sys
import textwrap

import numpy as np

import compiler as C
import ops as O
from runtime.executors import kernel_cache
from tests.helpers import nonzero, rel_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model(x, y):
    return O.sum(O.tanh(x) * y, 1)


def test_kernels_go_to_the_cache_dir_named_by_their_hash(rng, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    x, y = nonzero(rng, (3, 4), dtype=np.float32), nonzero(rng, (3, 4), dtype=np.float32)
    program = C.compile(model, x, y, backend="interpret")
    files = sorted(os.listdir(tmp_path))
    assert len(files) == len(program.compiled.sources)
    for text in program.compiled.sources:
        assert os.path.basename(kernel_cache.path_for(text)) in files


def test_a_corrupted_file_is_regenerated_not_executed(rng, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    x, y = nonzero(rng, (5, 2), dtype=np.float32), nonzero(rng, (5, 2), dtype=np.float32)
    want = C.jit(model, backend="reference")(x, y)
    program = C.compile(model, x, y, backend="interpret")
    for text in program.compiled.sources:            # vandalize every cached kernel
        with open(kernel_cache.path_for(text), "w") as f:
            f.write("raise SystemExit('a corrupted kernel was executed')\n")
    kernel_cache._modules.clear()                      # a new process: nothing imported yet
    again = C.compile(model, x, y, backend="interpret")
    assert rel_error(again(x, y), want) < 1e-5
    for text in again.compiled.sources:
        with open(kernel_cache.path_for(text)) as f:
            assert f.read() == text


def test_a_foreign_file_with_our_name_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    text = "import triton\n\nVALUE = 42\n"
    path = kernel_cache.path_for(text)
    with open(path, "w") as f:
        f.write("VALUE = 666\n")
    assert kernel_cache.load(text, interpret=True).VALUE == 42


def test_two_processes_compiling_at_once_both_succeed(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import numpy as np, ops as O, compiler as C
        def f(x):
            return O.sum(O.exp(x) * 3.0, 0) + O.amax(x, 0)
        x = np.linspace(0.1, 2.0, 24, dtype=np.float32).reshape(4, 6)
        got = C.jit(f, backend="interpret")(x)
        want = C.jit(f, backend="reference")(x)
        assert np.allclose(got, want, rtol=1e-5), (got, want)
        print("ok")
    """)
    env = dict(os.environ, CHAINRULE_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]      # no half-written leftovers


def test_loading_a_kernel_leaves_the_environment_as_it_was():
    """Triton's interpret knob writes TRITON_INTERPRET into os.environ; a child process (the
    dump's run.py) must not inherit a "0" that chainrule never asked for."""
    import os

    import compiler as C
    import ops as O

    before = os.environ.pop("TRITON_INTERPRET", None)
    try:
        C.jit(lambda x: O.exp(x) * 1.5, backend="interpret")(np.full(3, 0.5, np.float32))
        assert "TRITON_INTERPRET" not in os.environ
    finally:
        if before is not None:
            os.environ["TRITON_INTERPRET"] = before
