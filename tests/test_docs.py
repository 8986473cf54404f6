"""The op reference in docs/ is generated from the registry; it must not go stale."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_op_reference_is_current():
    spec = importlib.util.spec_from_file_location("make_op_reference", os.path.join(ROOT, "docs", "make_op_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(os.path.join(ROOT, "docs", "ops.md")) as f:
        committed = f.read()
    assert committed == module.render(), "docs/ops.md is stale: run `python docs/make_op_reference.py`"
    for name in ("conv2d", "window_scatter", "reduce_max", "matmul"):
        assert f"| `{name}` |" in committed
