"""Helpers shared by the tests: random inputs that are never zero, relative errors, and the
mark for tests that need graphviz."""
import inspect

import numpy as np
import pytest

from compiler.render import find_dot

# A test that reads a picture graphviz drew; without graphviz the pictures are .dot files
# (tests/misuse/test_without_dot.py covers that), so the test is skipped, saying why.
needs_dot = pytest.mark.skipif(find_dot() is None, reason="needs graphviz's dot (apt-get install graphviz)")


def nonzero(rng, shape, low=0.1, high=2.0, dtype=np.float64):
    """Values bounded away from zero, with random signs."""
    return (rng.uniform(low, high, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


def positive(rng, shape, low=0.1, high=2.0, dtype=np.float64):
    return rng.uniform(low, high, shape).astype(dtype)


def rel_error(got, want):
    """‖got − want‖ / ‖want‖ (absolute error when want is all zeros)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    scale = np.linalg.norm(want)
    return float(np.linalg.norm(got - want) / (scale if scale > 0 else 1.0))


def run_both(fn, *arrays):
    """(reference outputs, Triton outputs) of fn traced on `arrays`; the Triton outputs are
    poisoned with NaN before every launch, so an element a kernel forgets stays NaN."""
    import compiler as C
    from compiler.codegen import Target
    from ops.evaluate import run_graph

    graph = C.trace(fn, *arrays)
    return run_graph(graph, list(arrays)), kernel_executor(graph, poison=True)(list(arrays))


def assert_close(want, got, tol=1e-5):
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == w.dtype
        if w.dtype.kind == "f":
            assert np.array_equal(np.isnan(g), np.isnan(w)), "an output element was never written"
            assert rel_error(np.nan_to_num(g), np.nan_to_num(w)) < tol
        else:
            assert np.array_equal(g, w)


def kernel_executor(graph, target=None, poison=False, fuse=True, carry=(), **options):
    """The Triton executor of `graph` as it is: only the kernel passes (fuse, lower, codegen,
    plan_memory) run, so a test sees exactly the graph it built."""
    from compiler.pipeline import compile_kernels
    from runtime.executors.triton import TritonExecutor

    return TritonExecutor(compile_kernels(graph, target or "interpret", carry=carry, fuse=fuse), poison=poison,
                          **options)


def marked_line(module, marker):
    """The number of the line in `module`'s source that ends with `# marker`: a test asserts
    that an error names the user's line without hard-coding its number."""
    for number, text in enumerate(inspect.getsource(module).splitlines(), start=1):
        if text.rstrip().endswith(f"# {marker}"):
            return number
    raise LookupError(marker)
