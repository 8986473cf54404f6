"""The progress bar (runtime/progress.py): redraws on a terminal, one line in a log."""
import io

import pytest

from ops.errors import ArgumentError
from runtime.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_line_format():
    bar = Progress(20, "epoch 3/10", out=io.StringIO(), width=20)
    bar.update(12, loss=0.41234, acc=0.912)
    assert bar.line() == "epoch 3/10 [████████████░░░░░░░░] 12/20  loss 0.4123  acc 0.912"


def test_tty_redraws_one_line():
    out = FakeTTY()
    bar = Progress(4, "epoch 1/2", out=out, width=4)
    for loss in (1.5, 1.25, 1.0, 0.875):
        bar.update(loss=loss)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    frames = text.rstrip("\n").split("\r")[1:]
    assert frames[0] == "epoch 1/2 [█░░░] 1/4  loss 1.5"
    assert frames[-1] == "epoch 1/2 [████] 4/4  loss 0.875"
    assert frames[2] == "epoch 1/2 [███░] 3/4  loss 1   "     # blanks out what the longer frame left


def test_not_a_tty_prints_only_the_final_line():
    out = io.StringIO()
    with Progress(3, "epoch 2/2", out=out, width=6) as bar:
        for step in range(3):
            bar.update(loss=1.0 / (step + 1), lr=0.5)
            assert out.getvalue() == ""                  # nothing per step: logs stay short
    assert out.getvalue() == "epoch 2/2 [██████] 3/3  loss 0.3333  lr 0.5\n"
    bar.close()                                          # idempotent
    assert out.getvalue().count("\n") == 1
    with pytest.raises(ArgumentError, match="closed"):
        bar.update()


def test_edges():
    out = io.StringIO()
    bar = Progress(0, out=out, width=3)
    bar.close()
    assert out.getvalue() == "[███] 0/0\n"
    bar = Progress(2, "x", out=io.StringIO(), width=4)
    bar.update(5, step=7, note="ok")
    assert bar.line() == "x [████] 5/2  step 7  note ok"
    with pytest.raises(ArgumentError, match="total must be a number of steps >= 0, got -1"):
        Progress(-1)


def test_ascii_stream_falls_back_to_ascii():
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    bar = Progress(2, "e", out=out, width=2)
    bar.update()
    bar.close()
    out.flush()
    assert raw.getvalue() == b"e [#-] 1/2\n"


def test_default_out_is_stdout(capsys):
    with Progress(2, "epoch 1/1", width=2) as bar:
        bar.update(2)
    assert capsys.readouterr().out == "epoch 1/1 [██] 2/2\n"
