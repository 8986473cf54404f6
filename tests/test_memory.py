"""Memory planning (compiler/memory.py): liveness, in-place reuse, greedy best-fit offsets,
the verifier, and the runtime that runs every kernel from one arena."""
import re

import numpy as np
import pytest

import compiler as C
import ops as O
from compiler.codegen import Target
from compiler.lower import lower
from compiler.memory import (
    Interval,
    MemoryPlanError,
    assign_offsets,
    plan_intervals,
    plan_memory,
    verify,
)
from ops.evaluate import run_graph
from runtime.executors.triton import TritonExecutor
from runtime.training.zoo import ZOO
from tests.helpers import nonzero, rel_error, kernel_executor


def planned(intervals, alignment=1):
    plan = plan_intervals([Interval(*i) for i in intervals], alignment)
    verify(plan)
    assert plan.live_lower_bound_bytes <= plan.arena_bytes <= plan.no_reuse_bytes
    return plan


def offsets(plan):
    return {r.name: r.offset for r in plan.rows}


def graph_plan(fn, *arrays):
    """The plan of fn's graph lowered one node per kernel (no fusion), verified."""
    plan = plan_memory(lower(C.trace(fn, *arrays)))
    verify(plan)
    assert plan.live_lower_bound_bytes <= plan.arena_bytes <= plan.no_reuse_bytes
    return plan


# -- the placement, on hand-made lifetimes ----------------------------------------------------

def test_a_buffer_takes_the_memory_of_one_that_died_before_it_was_born():
    plan = planned([("a", 100, 0, 1), ("b", 50, 1, 2), ("c", 100, 2, 3)])
    assert offsets(plan) == {"a": 0, "b": 100, "c": 0}
    assert plan.arena_bytes == plan.live_lower_bound_bytes == 150      # optimal
    assert plan.no_reuse_bytes == 250


def test_best_fit_takes_the_smallest_gap_that_holds_the_buffer():
    # when t is placed, the buffers live with it (x at 60, y at 120) leave gaps [0, 60) and
    # [90, 120): first fit would take 0, best fit takes the tighter 90; the arena is the optimum
    plan = planned([("b1", 120, 0, 1), ("y", 100, 1, 6), ("b2", 60, 2, 3), ("x", 30, 3, 6), ("t", 20, 5, 6)])
    assert offsets(plan) == {"b1": 0, "y": 120, "b2": 0, "x": 60, "t": 90}
    assert plan.arena_bytes == plan.live_lower_bound_bytes == 220
    assert plan.peak_step == 1


def test_largest_first_beats_placing_in_time_order():
    # in time order, p takes 0 and q 10, and r (20 bytes, born when p dies) fits nowhere below 20:
    # arena 40. Largest first: r at 0, p at 0 (they never meet), q above both: 30, the lower bound
    plan = planned([("p", 10, 0, 0), ("q", 10, 0, 5), ("r", 20, 1, 1)])
    assert offsets(plan) == {"r": 0, "p": 0, "q": 20}
    assert plan.arena_bytes == plan.live_lower_bound_bytes == 30


def test_when_largest_first_leaves_a_hole_another_order_reaches_the_lower_bound():
    # largest first: c (30 B) at 0, d at 30, a at 0 once c is dead, and b fits nowhere below 50:
    # 70 B. Longest-lived first puts d at the bottom, out of the way: 60 B, the lower bound
    lifetimes = [("a", 20, 4, 5), ("b", 20, 4, 5), ("c", 30, 2, 3), ("d", 20, 1, 5)]
    intervals = [Interval(*t) for t in lifetimes]
    assert assign_offsets(intervals, alignment=1) == [0, 50, 0, 30]
    plan = planned(lifetimes, alignment=1)
    assert offsets(plan) == {"d": 0, "c": 20, "a": 20, "b": 40} and plan.order == "longest-lived first"
    assert plan.arena_bytes == plan.live_lower_bound_bytes == 60
    assert "longest-lived first" in plan.text()


def test_offsets_are_aligned_and_allocations_take_whole_units():
    plan = planned([("a", 10, 0, 2), ("b", 10, 1, 2), ("c", 70, 2, 3), ("d", 4, 3, 3)], alignment=64)
    assert offsets(plan) == {"c": 0, "a": 128, "b": 192, "d": 128}
    assert plan.arena_bytes == 256
    assert plan.live_lower_bound_bytes == 90                            # raw bytes live at step 2
    assert plan.no_reuse_bytes == 64 + 64 + 128 + 64


def test_disjoint_lifetimes_all_share_offset_zero_and_empty_buffers_take_nothing():
    plan = planned([("a", 30, 0, 0), ("b", 20, 1, 1), ("c", 30, 2, 2), ("e", 0, 0, 2)])
    assert set(offsets(plan).values()) == {0}
    assert plan.arena_bytes == plan.live_lower_bound_bytes == 30
    empty = planned([])
    assert (empty.arena_bytes, empty.live_lower_bound_bytes, empty.no_reuse_bytes) == (0, 0, 0)


def test_the_core_placement_is_a_plain_function_of_intervals():
    assert assign_offsets([Interval("a", 8, 0, 1), Interval("b", 8, 1, 1)], alignment=16) == [0, 16]


# -- the verifier --------------------------------------------------------------------------

def test_verifier_names_the_two_buffers_of_a_planted_overlap():
    plan = planned([("a", 100, 0, 1), ("b", 50, 1, 2), ("c", 100, 2, 3)])
    plan.row("b").offset = 64                                           # into a, while a is live
    with pytest.raises(MemoryPlanError, match=r"buffers a and b .*overlap"):
        verify(plan)


def test_verifier_catches_misaligned_and_out_of_bounds_buffers():
    plan = planned([("a", 10, 0, 1), ("b", 10, 0, 1)], alignment=64)
    plan.row("b").offset = 32
    with pytest.raises(MemoryPlanError, match="b is at offset 32"):
        verify(plan)
    plan.row("b").offset = 128
    with pytest.raises(MemoryPlanError, match="outside the arena"):
        verify(plan)


# -- liveness and in-place reuse on graphs -------------------------------------------------------

def test_a_pointwise_chain_runs_in_place(rng):
    x = nonzero(rng, (4, 8), dtype=np.float32)
    plan = graph_plan(lambda x: O.exp(O.exp(O.exp(O.exp(x)))), x)
    rows = {r.name: r for r in plan.rows}
    assert [r.reused_from for r in plan.rows] == [None, "t0", "t1"]   # x itself is an input: never
    assert len({r.offset for r in plan.rows}) == 1
    assert [(r.first, r.last) for r in plan.rows] == [(0, 1), (1, 2), (2, 3)]
    assert [name for name, _, _ in plan.results] == ["t3"]          # the output: the caller's, not the arena's
    assert plan.live_lower_bound_bytes == plan.arena_bytes == 128 == rows["t0"].bytes
    assert plan.no_reuse_bytes == 3 * 128


def test_no_in_place_over_a_graph_output(rng):
    x, w = nonzero(rng, (4, 8), dtype=np.float32), nonzero(rng, (8, 8), dtype=np.float32)
    def f(x, w):
        h = x @ w
        return h, O.exp(h)
    plan = graph_plan(f, x, w)
    assert not plan.rows and plan.arena_bytes == 0                      # both outputs: result buffers
    assert [name for name, _, _ in plan.results] == ["t0", "t1"]


def test_no_in_place_over_a_buffer_still_needed_later(rng):
    x, w = nonzero(rng, (4, 8), dtype=np.float32), nonzero(rng, (8, 8), dtype=np.float32)
    def f(x, w):
        h = x @ w
        return O.exp(O.exp(h) + h)
    plan = graph_plan(f, x, w)
    assert plan.row("t1").reused_from is None                          # exp: t0 is read again by the add
    assert plan.row("t2").reused_from == "t1"                          # the add is the last use of both


def test_no_in_place_through_a_transposed_view(rng):
    x, w = nonzero(rng, (8, 8), dtype=np.float32), nonzero(rng, (8, 8), dtype=np.float32)
    assert graph_plan(lambda x, w: O.exp(O.exp((x @ w).T)), x, w).row("t2").reused_from is None
    def f(x, w):       # the same buffer read straight and transposed: lane i reads what lane j writes
        h = x @ w
        return O.exp(h + h.T)
    assert graph_plan(f, x, w).row("t2").reused_from is None
    assert graph_plan(lambda x, w: O.exp(O.exp(x @ w)), x, w).row("t1").reused_from == "t0"


def test_no_in_place_across_dtypes_or_sizes(rng):
    x, w = nonzero(rng, (4, 8), dtype=np.float32), nonzero(rng, (8, 8), dtype=np.float32)
    assert graph_plan(lambda x, w: O.where((x @ w) > 0.0, 1.0, -1.0), x, w).row("t1").reused_from is None
    assert graph_plan(lambda x, w: O.exp(O.sum(x @ w, 1)), x, w).row("t1").reused_from is None


# -- the runtime runs from the arena -------------------------------------------------------------

def _check_same(got, want, tol):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert not np.isnan(g).any(), "an output element was never written (poison left)"
        assert rel_error(g, w) < tol


@pytest.mark.parametrize("name", ["logreg", "mlp", "lenet", "resnet"])
def test_zoo_training_steps_from_the_arena_equal_the_reference(name, rng):
    model = ZOO[name]
    params = model.init(rng)
    batch = 4
    program = C.compile(model.loss, *model.specs(params, batch), grad_argnums=tuple(range(len(params))),
                        backend="reference")
    executor = kernel_executor(program.graph, Target(), poison=True)
    verify(executor.plan)
    report = program.report()
    assert (report["arena_bytes"], report["live_lower_bound_bytes"], report["no_reuse_bytes"]) == \
        (executor.plan.arena_bytes, executor.plan.live_lower_bound_bytes, executor.plan.no_reuse_bytes)
    # in place happens in every model (fused, the chains it serves may have become one kernel)
    unfused = plan_memory(lower(program.graph))
    verify(unfused)
    assert any(r.reused_from for r in unfused.rows)
    arena = []
    allocate = executor._allocate

    def spy(node):
        out = allocate(node)
        in_arena = out.untyped_storage().data_ptr() == executor.arena.untyped_storage().data_ptr()
        arena.append(in_arena == (node in executor.offsets))
        return out
    executor._allocate = spy
    for _ in range(2):                           # the second call reuses the first call's arena
        x = rng.standard_normal((batch, 1, 8, 8) if model.image else (batch, 64)).astype(np.float32)
        args = [*params, x, rng.integers(0, 10, batch)]
        _check_same(executor(args), run_graph(program.graph, args), 1e-4)
    assert arena and all(arena)                  # every kernel output but the results is a view of the arena
    assert executor.arena.numel() == executor.plan.arena_bytes


def test_an_in_place_kernel_gives_the_right_answer_at_runtime(rng):
    x, w = nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (5, 7), dtype=np.float32)

    def f(x, w):
        h = x @ w
        return O.exp(O.tanh(h)), h * 2.0                 # h is read twice: no kernel writes over it
    # (through a reshape: straight after the matmul, exp and tanh would join its kernel as an epilogue)
    v = nonzero(rng, (7, 3), dtype=np.float32)
    graph = C.trace(lambda x, w, v: O.reshape(O.exp(O.tanh(O.reshape(x @ w, (42,)))), (6, 7)) @ v, x, w, v)
    executor = kernel_executor(graph, Target(), poison=True)
    assert executor.in_place                      # the pointwise kernel writes over the matmul's output
    _check_same(executor([x, w, v]), run_graph(graph, [x, w, v]), 1e-5)
    graph = C.trace(f, x, w)
    _check_same(kernel_executor(graph, Target(), poison=True)([x, w]), run_graph(graph, [x, w]), 1e-5)


def test_outputs_that_are_views_of_result_buffers_come_out_right_and_survive_the_next_call(rng):
    x, w = nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (5, 7), dtype=np.float32)

    def f(x, w):
        h = x @ w
        a, b = O.exp(h), O.tanh(h)
        return a.T, b.T, b[1:, ::2], x.T, O.sum(a, 1)
    graph = C.trace(f, x, w)
    executor = kernel_executor(graph, Target(), poison=True)
    assert len(executor.plan.results) == 3                    # exp, tanh and the sum: outside the arena
    first = executor([x, w])
    kept = [a.copy() for a in first]
    second = executor([2 * x, w])
    _check_same(first, run_graph(graph, [x, w]), 1e-5)
    _check_same(second, run_graph(graph, [2 * x, w]), 1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(first, kept))   # fresh result buffers for every call


# -- report and dump -----------------------------------------------------------------------------

def test_report_and_dump_show_the_plan(tmp_path, rng):
    x, w = nonzero(rng, (6, 5), dtype=np.float32), nonzero(rng, (5, 7), dtype=np.float32)

    def f(x, w):
        return O.mean(O.relu(x @ w))
    interpreted = C.compile(f, x, w, grad_argnums=(1,), backend="interpret")
    reference = C.compile(f, x, w, grad_argnums=(1,), backend="reference")
    keys = ("arena_bytes", "live_lower_bound_bytes", "no_reuse_bytes")
    got = [interpreted.report()[k] for k in keys]
    assert all(isinstance(v, int) for v in got)
    assert 0 < got[1] <= got[0] <= got[2]
    assert [reference.report()[k] for k in keys] == got            # the reference reports the same plan
    interpreted.dump(tmp_path / "a")
    interpreted.dump(tmp_path / "b")
    reference.dump(tmp_path / "c")
    text = (tmp_path / "a" / "04_memory.txt").read_text()
    assert text == (tmp_path / "b" / "04_memory.txt").read_text() == (tmp_path / "c" / "04_memory.txt").read_text()
    assert "buffer" in text and "reused-from" in text and "lower bound" in text and "no reuse" in text
    assert re.search(rf"^arena +{got[0]} bytes", text, re.MULTILINE)
    assert re.search(rf"^lower bound +{got[1]} bytes", text, re.MULTILINE)
    assert re.search(rf"^no reuse +{got[2]} bytes", text, re.MULTILINE)
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("buffer"))
    table = lines[start + 1:lines.index("", start)]
    assert [line.split()[0] for line in table] == [r.name for r in interpreted.memory.rows]
