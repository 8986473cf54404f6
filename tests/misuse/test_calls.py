"""Misuse of the calls themselves: argnums out of range, a wrong rank, a compiled program given
the wrong number of arrays, an unknown command-line flag or subcommand. (Corrupt kernel and
tuning cache entries: tests/test_kernel_cache.py and tests/test_autotune.py; bad shapes,
broadcasts, keywords and control flow: tests/test_errors.py.)"""
import numpy as np
import pytest

import compiler as C
import ops as O
from ops.errors import ArgumentError, ShapeError
from runtime.cli import main
from tests.helpers import nonzero


def loss(w, x):
    return O.sum(x @ w)


@pytest.mark.parametrize("argnums", [2, -3, (0, 5)])
@pytest.mark.parametrize("transform", [C.grad, C.value_and_grad])
def test_argnums_out_of_range_names_it_and_the_function(rng, transform, argnums):
    w, x = nonzero(rng, (3, 2)), nonzero(rng, (4, 3))
    with pytest.raises(ArgumentError) as err:
        transform(loss, argnums=argnums)(w, x)
    message = str(err.value)
    assert "argnums" in message and "out of range" in message and "loss" in message and "test_calls.py:" in message


def test_a_conv_on_an_input_of_the_wrong_rank_names_both_shapes(rng):
    w = nonzero(rng, (2, 1, 3, 3))
    with pytest.raises(ShapeError) as err:
        C.jit(lambda x, w: O.conv2d(x, w))(nonzero(rng, (1, 5, 5)), w)
    assert "(1, 5, 5)" in str(err.value) and "(2, 1, 3, 3)" in str(err.value) and "test_calls.py:" in str(err.value)


def test_a_compiled_program_given_too_few_arrays_lists_what_it_takes(rng):
    program = C.compile(loss, O.spec((3, 2)), O.spec((4, 3)))
    with pytest.raises(ArgumentError) as err:
        program.run([nonzero(rng, (3, 2), dtype=np.float32)])
    assert "takes 2 arrays" in str(err.value) and "got 1" in str(err.value)


@pytest.mark.parametrize("argv, says", [(["train", "lenet", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
                                        (["trian", "lenet"], "invalid choice: 'trian'")])
def test_an_unknown_flag_or_subcommand_is_a_usage_error(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err
