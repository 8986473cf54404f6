"""Carried state (compile(carry=...)): a program's outputs feeding its own inputs at the next
call, kept on the device and written over the old value where the memory plan proves it safe
(compiler/memory.py `_state_update`), else replaced by the fresh buffer."""
import numpy as np
import pytest

import compiler as C
import ops as O
from compiler.codegen import Target
from ops.errors import ArgumentError
from ops.evaluate import run_graph
from runtime.executors.triton import TritonExecutor
from tests.helpers import nonzero, rel_error, kernel_executor


def _reference_steps(fn, state, frees, carry):
    """Run fn call by call on NumPy, feeding the carried outputs back by hand."""
    graph = C.trace(fn, *state, *frees[0])
    outs_all = []
    for free in frees:
        outputs = run_graph(graph, [*state, *free])
        state = [outputs[carry[i]] for i in range(len(state))]
        outs_all.append([o for j, o in enumerate(outputs) if j not in carry.values()])
    return state, outs_all


def momentum_step(w, v, x, g):
    """A fused update that reads w and v only where it writes them: written in place."""
    v_new = 0.9 * v + g * x
    return O.sum(w * x), w - 0.1 * v_new, v_new


def transposed_step(w, x):
    """Lane (i, j) reads w[j, i]: writing over w would clobber what another lane still reads."""
    return w.T * 0.5 + x, O.sum(w)


@pytest.mark.parametrize("backend", ["reference", "interpret"])
def test_carried_momentum_equals_feeding_the_outputs_back_by_hand(backend, rng):
    w, v = nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (6, 5), dtype=np.float32)
    frees = [[nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (6, 5), dtype=np.float32)] for _ in range(3)]
    carry = {0: 1, 1: 2}
    program = C.compile(momentum_step, O.spec(w.shape), O.spec(v.shape), O.spec((6, 5)), O.spec((6, 5)),
                        backend=backend, carry=carry)
    program.load_state([w, v])
    got = [program.run(free) for free in frees]
    want_state, want = _reference_steps(momentum_step, [w, v], frees, carry)
    for g, e in zip(got, want):       # a float32 sum of 30 terms of size ~1: its error is absolute, ~1e-6
        assert len(g) == 1 and np.isclose(g[0], e[0], rtol=1e-5, atol=1e-4)
    for g, e in zip(program.state(), want_state):
        assert rel_error(g, e) < 1e-5
    assert program(*frees[0]).shape == ()              # the call form returns the free outputs only


def test_an_update_that_reads_only_its_own_element_is_written_in_place(rng):
    w, v = nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (6, 5), dtype=np.float32)
    graph = C.trace(momentum_step, w, v, w, v)
    executor = kernel_executor(graph, Target(), poison=True, carry=[(0, 1), (1, 2)])
    assert [u.in_place for u in executor.plan.updates] == [True, True]
    assert not executor.plan.results or all(r[0] != u.name for r in executor.plan.results
                                            for u in executor.plan.updates)
    executor.load_state([w, v])
    before = {id(t) for t in executor.carried.values()}
    x, g = nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (6, 5), dtype=np.float32)
    executor([x, g])
    assert {id(t) for t in executor.carried.values()} == before      # the same device buffers, updated
    assert "2 written in place over their old value" in " ".join(executor.plan.text().replace("#", " ").split())


def test_an_update_that_reads_another_lanes_element_gets_a_fresh_buffer_and_stays_right(rng):
    w = nonzero(rng, (5, 5), dtype=np.float32)
    frees = [[nonzero(rng, (5, 5), dtype=np.float32)] for _ in range(3)]
    graph = C.trace(transposed_step, w, w)
    executor = kernel_executor(graph, Target(), poison=True, carry=[(0, 0)])
    (update,) = executor.plan.updates
    assert not update.in_place and "does not write" in update.why
    assert "a fresh buffer becomes the new" in " ".join(executor.plan.text().replace("#", " ").split())
    executor.load_state([w])
    got = [executor(free) for free in frees]
    want_state, want = _reference_steps(transposed_step, [w], frees, {0: 0})
    assert rel_error(executor.state()[0], want_state[0]) < 1e-5
    for g, e in zip(got, want):
        assert rel_error(g[0], e[0]) < 1e-5


def test_the_writer_of_a_carried_value_runs_after_the_other_readers_of_the_old_one(rng):
    w = nonzero(rng, (4, 6), dtype=np.float32)

    def step(w, x):
        new = w * 0.5                     # its own kernel, and then
        return new, O.sum(w @ x)          # a matmul reads w: scheduled after, it needs the old w
    graph = C.trace(step, w, nonzero(rng, (6, 3), dtype=np.float32))
    executor = kernel_executor(graph, Target(), poison=True, carry=[(0, 0)])
    (update,) = executor.plan.updates
    writer, readers = update.step, [k.index for k in executor.schedule.kernels
                                    if any(getattr(v, "base", None) is graph.inputs[0] for v in k.inputs.values())]
    assert update.in_place and sorted(readers)[-2] < writer == readers[-1]     # the matmul first
    executor.load_state([w])
    x = nonzero(rng, (6, 3), dtype=np.float32)
    (total,) = executor([x])
    assert rel_error(total, np.sum(w @ x)) < 1e-5 and rel_error(executor.state()[0], w * 0.5) < 1e-6


def test_carry_errors_name_the_positions_and_types():
    specs = (O.spec((3,)), O.spec((3,)))
    with pytest.raises(ArgumentError, match="carried value keeps its type"):
        C.compile(lambda a, b: O.sum(a * b), *specs, carry={0: 0})
    with pytest.raises(ArgumentError, match="out of range"):
        C.compile(lambda a, b: a * b, *specs, carry={0: 3})
    with pytest.raises(ArgumentError, match="grad_argnums"):
        C.compile(lambda a, b: O.sum(a * b), *specs, grad_argnums=(0,), carry={0: 0})
    program = C.compile(lambda a, b: (a * b, O.sum(b)), *specs, backend="interpret", carry={0: 0})
    with pytest.raises(RuntimeError, match="load_state"):
        program.run([np.ones(3, np.float32)])
    program.load_state([np.full(3, 2.0, np.float32)])
    with pytest.raises(ArgumentError, match="takes 1 arrays"):
        program.run([np.ones(3, np.float32), np.ones(3, np.float32)])


def test_a_reader_of_both_the_old_and_the_new_value_keeps_them_apart(rng):
    w = nonzero(rng, (4, 6), dtype=np.float32)

    def step(w):
        new = O.exp(w) * 0.5
        return new, O.sum(new @ w.T)          # the matmul reads the new and the old w: it comes after
    graph = C.trace(step, w)
    executor = kernel_executor(graph, Target(), poison=True, carry=[(0, 0)])
    executor.load_state([w])
    (total,) = executor([])
    new = np.exp(w) * 0.5
    assert not executor.plan.updates[0].in_place
    assert rel_error(total, np.sum(new @ w.T)) < 1e-5
    assert rel_error(executor.state()[0], new) < 1e-6
