"""Autotuning (runtime/executors/autotune.py): a matmul or conv kernel's candidate block sizes are timed
at compile time and the fastest kept, cached per kernel and device, and logged in
06_autotune.txt. Every candidate must compute the same thing; tuning must not touch the
program's state; the cache must survive being corrupted."""
import json
import os

import numpy as np
import pytest
import torch

import compiler as C
import ops as O
from ops.errors import BackendError
from runtime.executors import autotune
from tests.helpers import nonzero, rel_error


def dense_conv(x, w, v):
    """A conv and a matmul big enough that each has more than one candidate under the interpreter."""
    h = O.relu(O.conv2d(x, w, padding=1))                    # implicit GEMM [5184 x 27] @ [27 x 4]
    return O.sum(O.tanh(h.reshape((72, 288)) @ v))           # [72 x 288] @ [288 x 20]


SPECS = [O.spec((1, 3, 72, 72)), O.spec((4, 3, 3, 3)), O.spec((288, 20))]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path))
    return tmp_path


def _args(rng):
    return [nonzero(rng, s.shape, dtype=np.float32) for s in SPECS]


def test_every_candidate_computes_the_same(rng, cache):
    program = C.compile(dense_conv, *SPECS, grad_argnums=(1, 2), backend="interpret")
    executor = program.executor
    tunable = [(k, m) for k, m in zip(executor.schedule.kernels, executor.modules)
               if autotune.candidates(m, executor.target)]
    assert {k.family for k, _ in tunable} >= {"matmul", "conv"}, [k.name for k, _ in tunable]
    for kernel, module in tunable:        # the GPU's candidates too, run by the interpreter
        inputs, outputs = executor._random_args(kernel)
        results = []
        for config in module.INTERPRETER_CONFIGS + getattr(module, "CONFIGS", []):
            fresh = [torch.full_like(o, float("nan")) for o in outputs]
            module.launch(*inputs, *fresh, **config)
            results.append(fresh)
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert not torch.isnan(b).any() and rel_error(b.numpy(), a.numpy()) < 1e-5, kernel.name


def test_autotuned_program_is_correct_logs_its_choices_and_caches_them(rng, cache, monkeypatch, tmp_path):
    args = _args(rng)
    want = C.compile(dense_conv, *SPECS, grad_argnums=(1, 2), backend="reference")(*args)
    program = C.compile(dense_conv, *SPECS, grad_argnums=(1, 2), backend="interpret", autotune=True)
    got = program(*args)
    assert rel_error(got[0], want[0]) < 1e-5
    assert all(rel_error(g, w) < 1e-4 for g, w in zip(got[1], want[1]))
    tunings = program.executor.tunings
    assert len(tunings) >= 2 and not any(t.cached for t in tunings)
    margin = autotune.MARGIN["cpu"]
    for t in tunings:            # the fastest, unless the first is within the margin of it
        fastest = int(np.argmin(t.seconds))
        assert t.chosen == (0 if t.seconds[0] <= t.seconds[fastest] * (1 + margin) else fastest)
        assert len(t.configs) >= 2
    assert "autotune" in program.report()["compile_seconds"]
    text = open(os.path.join(tmp_path, "out", "06_autotune.txt")).read() if program.dump(tmp_path / "out") else ""
    assert text.count("<- chosen") == len(tunings) and "measured by this compile" in text
    for t in tunings:
        assert t.kernel in text
    # the same kernels again: every choice comes from the cache, nothing is timed
    monkeypatch.setattr(autotune, "_cpu_clock", lambda launch, runs: pytest.fail("timed a cached kernel"))
    again = C.compile(dense_conv, *SPECS, grad_argnums=(1, 2), backend="interpret", autotune=True)
    assert [t.config for t in again.executor.tunings] == [t.config for t in tunings]
    assert all(t.cached for t in again.executor.tunings)
    assert "from the cache" in again.executor.autotune_text()


def test_a_corrupted_cache_entry_is_measured_again_and_rewritten(cache):
    C.compile(dense_conv, *SPECS, backend="interpret", autotune=True)
    entries = sorted((cache / "tuned").glob("t_*.json"))
    assert entries
    entries[0].write_text('{"configs": [')                   # half a file
    entries[-1].write_text(json.dumps({"configs": [{"BLOCK_M": 1}], "chosen": 0, "seconds": [1.0]}))  # others
    program = C.compile(dense_conv, *SPECS, backend="interpret", autotune=True)
    assert sum(not t.cached for t in program.executor.tunings) == (2 if len(entries) > 1 else 1)
    for entry in entries:
        assert json.loads(entry.read_text())["configs"]       # whole again


def test_a_failing_candidate_is_logged_and_skipped_and_all_failing_is_an_error(cache, monkeypatch):
    calls = []

    def clock(launch, runs):
        calls.append(1)
        if len(calls) % 2 == 0:
            raise RuntimeError("out of resources: shared memory\nmore detail")
        return 0.001 * len(calls)

    monkeypatch.setattr(autotune, "_cpu_clock", clock)
    program = C.compile(dense_conv, *SPECS, backend="interpret", autotune=True)
    tuning = program.executor.tunings[0]
    assert tuning.seconds[1] is None and "out of resources" in tuning.errors[1] and tuning.chosen != 1
    assert "failed: RuntimeError: out of resources: shared memory" in program.executor.autotune_text()

    def broken(launch, runs):
        raise RuntimeError("no")

    monkeypatch.setattr(autotune, "_cpu_clock", broken)
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(cache / "empty"))
    with pytest.raises(BackendError, match="autotuning k0.*every candidate failed"):
        C.compile(dense_conv, *SPECS, backend="interpret", autotune=True)


def test_tuning_a_training_step_leaves_its_state_alone(rng, cache):
    from ops import layers as L

    def build():
        return L.Sequential(L.Conv2d(1, 4, 3, padding=1), L.ReLU(), L.Flatten(), L.Dense(4 * 36 * 36, 10),
                            input_shape=(1, 36, 36)).init(1)

    steps = [C.compile_train_step(build(), O.cross_entropy, O.optim.Adam(1e-2), O.spec((4, 1, 36, 36)),
                                  O.spec((4,), "int64"), backend="interpret", autotune=tune) for tune in (False, True)]
    assert steps[1].program.executor.tunings                   # something was timed, on its own buffers
    for a, b in zip(steps[0].params + steps[0].opt_state, steps[1].params + steps[1].opt_state):
        assert np.array_equal(a, b)
    x, y = rng.uniform(0.1, 1.0, (4, 1, 36, 36)).astype(np.float32), rng.integers(0, 10, 4)
    (loss_a, _), (loss_b, _) = (step(x, y) for step in steps)
    assert abs(loss_a - loss_b) < 1e-5 * abs(loss_a)


def test_autotuning_is_off_under_the_interpreter_unless_asked(cache, tmp_path):
    program = C.compile(dense_conv, *SPECS, backend="interpret")
    assert not program.executor.tunings and "autotune" not in program.report()["compile_seconds"]
    program.dump(tmp_path / "out")
    assert "off (the default under the interpreter" in (tmp_path / "out" / "06_autotune.txt").read_text()


def test_run_script_launches_each_kernel_with_the_tuned_block_sizes(cache, tmp_path):
    import subprocess
    import sys

    program = C.compile(dense_conv, *SPECS, grad_argnums=(1, 2), backend="interpret", autotune=True)
    program.dump(tmp_path / "step")
    script = (tmp_path / "step" / "run.py").read_text()
    files = dict(zip([k.name for k in program.schedule.kernels], [n for n, _ in program.compiled.files()]))
    for tuning in program.executor.tunings:
        assert f"{files[tuning.kernel]!r}: {tuning.config!r}," in script
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(tmp_path / "step" / "run.py")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("times, chosen", [([1.0, 0.95, 0.97], 0),      # within the noise: the rule's pick stays
                                           ([1.0, 0.95, 0.5], 2),       # clearly faster: taken
                                           ([None, 2.0, 1.0], 2)])      # the first failed: the fastest
def test_a_candidate_replaces_the_first_only_when_clearly_faster(times, chosen, cache):
    import types

    from compiler.codegen import Target

    module = types.SimpleNamespace(INTERPRETER_CONFIGS=[{"BLOCK": 1}, {"BLOCK": 2}, {"BLOCK": 4}],
                                   launch=lambda **config: None)
    timed = iter(times)

    def clock(launch, runs):
        seconds = next(timed)
        if seconds is None:
            raise RuntimeError("too big")
        return seconds

    tuning = autotune.tune("k00_fake", f"fake kernel {times}", module, lambda: ([], []), Target(), clock=clock)
    assert tuning.chosen == chosen and tuning.config == module.INTERPRETER_CONFIGS[chosen]
