"""Hypothesis programs (3-15 ops over random shapes, see tests/test_random_programs.py)
compiled to Triton kernels and run under the interpreter equal the reference executor,
in value and in every gradient."""
from hypothesis import HealthCheck, given, settings

import compiler as C
from tests.test_random_programs import _error, chainrule_fn, describe, programs

# float64 on both sides, but not the same formulas: the kernels compute tanh and sigmoid from
# exp, and 1 - tanh(x)**2 near saturation turns their last-bit differences into relative
# differences of ~1e-8 in a tiny gradient
TOLERANCE = 1e-6


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.filter_too_much])
@given(programs())
def test_random_program_through_generated_kernels_equals_the_reference(program):
    inputs, steps, weight = program
    fn = chainrule_fn(steps, weight)
    argnums = tuple(range(len(inputs)))
    want_value, want_grads = C.value_and_grad(fn, argnums=argnums, backend="reference")(*inputs)
    value, grads = C.value_and_grad(fn, argnums=argnums, backend="interpret")(*inputs)
    text = describe(inputs, steps)
    assert _error(value, want_value) < TOLERANCE, f"value {value} vs {want_value}\n{text}"
    for k, (got, want) in enumerate(zip(grads, want_grads)):
        assert _error(got, want) < TOLERANCE, f"gradient {k} differs (rel {_error(got, want):.2e})\n{text}"
