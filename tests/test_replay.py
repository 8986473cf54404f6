"""Replay (runtime/executors/replay.py): from the second call on, a program's launches are replayed from
one recording with fixed buffers (a CUDA graph on a GPU). Replayed calls must equal calls
run kernel by kernel, with fresh inputs every call, carried state moved forward, and
outputs that are the caller's own copies."""
import numpy as np

import compiler as C
import ops as O
from ops import layers as L
from tests.helpers import nonzero


def momentum_step(w, v, x, g):           # written in place
    v_new = 0.9 * v + g * x
    return O.sum(w * x), w - 0.1 * v_new, v_new


def transposed_step(w, x):               # a fresh buffer, copied over the old state at the end
    return O.sum(w * x), w.T * 0.5 + x


def unchanged_and_permuted(w, u, x):     # w carried as it is; u's new value is a view of u itself
    return O.sum(w * x) + O.sum(u), w, u.T


def _programs(fn, specs, carry, state):
    eager, replayed = (C.compile(fn, *specs, backend="interpret", carry=carry, replay=r) for r in (False, True))
    for p in (eager, replayed):
        p.load_state(state)
    return eager, replayed


def _same_steps(eager, replayed, frees):
    for free in frees:
        want, got = eager.run(free), replayed.run(free)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert all(np.array_equal(g, w) for g, w in zip(replayed.state(), eager.state()))


def test_replayed_calls_equal_calls_launched_one_by_one(rng):
    f32 = np.float32
    cases = [(momentum_step, [(6, 5)] * 4, {0: 1, 1: 2}, 2),
             (transposed_step, [(5, 5)] * 2, {0: 1}, 1),
             (unchanged_and_permuted, [(4, 3), (3, 3), (4, 3)], {0: 1, 1: 2}, 2)]
    for fn, shapes, carry, carried in cases:
        specs = [O.spec(s) for s in shapes]
        state = [nonzero(rng, s, dtype=f32) for s in shapes[:carried]]
        eager, replayed = _programs(fn, specs, carry, state)
        frees = [[nonzero(rng, s, dtype=f32) for s in shapes[carried:]] for _ in range(4)]
        _same_steps(eager, replayed, frees)
        recording = replayed.executor.recording
        assert recording is not None, fn.__name__              # calls 2-4 replayed it
        kernels = len(replayed.executor.schedule.kernels)
        copies = {momentum_step: 0, transposed_step: 1, unchanged_and_permuted: 1}[fn]
        assert len(recording.launches) == kernels + copies, fn.__name__


def test_a_replayed_training_step_equals_the_step_run_kernel_by_kernel(rng):
    def build():
        return L.Sequential(L.Conv2d(1, 4, 3, padding=1), L.BatchNorm2d(4), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
                            L.Dense(64, 10), input_shape=(1, 8, 8)).init(3)

    steps = [C.compile_train_step(build(), O.cross_entropy, O.optim.Adam(1e-2), O.spec((8, 1, 8, 8)),
                                  O.spec((8,), "int64"), backend="interpret", replay=r) for r in (False, True)]
    for _ in range(3):
        x, y = rng.uniform(0.1, 1.0, (8, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 8)
        (loss_a, logits_a), (loss_b, logits_b) = (step(x, y) for step in steps)
        assert loss_a == loss_b and np.array_equal(logits_a, logits_b)
    assert steps[1].program.executor.recording is not None
    for a, b in zip(steps[0].params + steps[0].states + steps[0].opt_state,
                    steps[1].params + steps[1].states + steps[1].opt_state):
        assert np.array_equal(a, b)


def test_outputs_are_the_callers_own_and_new_state_or_inputs_record_again(rng):
    f32 = np.float32
    w, v = nonzero(rng, (6, 5), dtype=f32), nonzero(rng, (6, 5), dtype=f32)
    eager, replayed = _programs(momentum_step, [O.spec((6, 5))] * 4, {0: 1, 1: 2}, [w, v])
    frees = [[nonzero(rng, (6, 5), dtype=f32) for _ in range(2)] for _ in range(6)]
    _same_steps(eager, replayed, frees[:2])
    first = replayed.run(frees[2])[0]
    kept = first.copy()
    second = replayed.run(frees[3])[0]
    assert np.array_equal(first, kept) and not np.shares_memory(first, second)   # not overwritten by the next call
    eager.run(frees[2]), eager.run(frees[3])
    # new state: the recording held the old tensors, so it is made again
    w2, v2 = nonzero(rng, (6, 5), dtype=f32), nonzero(rng, (6, 5), dtype=f32)
    for p in (eager, replayed):
        p.load_state([w2, v2])
    _same_steps(eager, replayed, frees[4:])
    # a call that watches every kernel runs them one by one, and replay resumes after it
    seen = []
    replayed.executor([*frees[0]], observe=lambda kernel, values: seen.append(kernel.name))
    eager.run(frees[0])
    assert seen == [k.name for k in replayed.executor.schedule.kernels]
    _same_steps(eager, replayed, frees[1:3])


def test_replay_is_off_under_the_interpreter_unless_asked():
    program = C.compile(momentum_step, *[O.spec((6, 5))] * 4, backend="interpret", carry={0: 1, 1: 2})
    assert program.executor.replay is False
