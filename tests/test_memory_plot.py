"""Pictures of memory plans (compiler/memory_plot.py): the formats, determinism, the labels."""
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import compiler as C
from compiler.memory import Interval, plan_intervals
from compiler.memory_plot import plot_memory
from runtime.training.zoo import ZOO


def small_plan():
    return plan_intervals([Interval("act", 4096, 0, 2), Interval("grad", 2048, 1, 3),
                           Interval("tmp", 4096, 3, 4)], alignment=64)


def test_svg_shows_buffers_and_bounds(tmp_path):
    path = tmp_path / "plots" / "memory.svg"           # the folder is made
    assert plot_memory(small_plan(), path) == str(path)
    ET.parse(path)                                     # well-formed XML
    text = path.read_text()
    for name in ("act", "grad", "tmp", "lower bound", "arena"):
        assert name in text
    assert [p.name for p in path.parent.iterdir()] == ["memory.svg"]    # no temporary file left


def test_same_plan_same_bytes(tmp_path):
    a = plot_memory(small_plan(), tmp_path / "a.svg", title="twice")
    b = plot_memory(small_plan(), tmp_path / "b.svg", title="twice")
    assert Path(a).read_bytes() == Path(b).read_bytes()


def test_lenet_training_step_png(tmp_path):
    model = ZOO["lenet"]
    params = model.init(np.random.default_rng(0))
    program = C.compile(model.loss, *model.specs(params, 8), grad_argnums=tuple(range(len(params))),
                        backend="reference")
    labels = [k.name for k in program.schedule.kernels]
    path = plot_memory(program.memory, tmp_path / "lenet.png", kernel_labels=labels)
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_suffix_names_the_path(tmp_path):
    path = tmp_path / "memory.gif"
    with pytest.raises(ValueError, match="memory.gif"):
        plot_memory(small_plan(), path)
    assert not path.exists()


def test_empty_plan(tmp_path):
    path = plot_memory(plan_intervals([]), tmp_path / "empty.svg")
    assert "no buffers in the arena" in Path(path).read_text()
