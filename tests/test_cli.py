"""The command line: `chainrule demo` and `chainrule kernels MODEL --out DIR`."""
import os
import textwrap

from runtime.cli import main


def _read_tree(root):
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path) as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_kernels_writes_the_numbered_artifacts_deterministically(tmp_path, capsys):
    assert main(["kernels", "logreg", "--out", str(tmp_path / "a"), "--batch-size", "8"]) == 0
    assert main(["kernels", "logreg", "--out", str(tmp_path / "b"), "--batch-size", "8"]) == 0
    first, second = _read_tree(tmp_path / "a"), _read_tree(tmp_path / "b")
    assert first == second                                   # compiling twice writes identical files
    assert {"00_trace.py", "01_joint.py", "02_simplified.py"} <= set(first)
    kernels = sorted(name for name in first if name.startswith("kernels" + os.sep))
    assert kernels and kernels[0].startswith(os.path.join("kernels", "00_"))
    for name in kernels:
        text = first[name]
        assert "@triton.jit" in text and "def launch(" in text
        assert "from zoo.py:" in text                         # the model's own source line
    out = capsys.readouterr().out
    assert "logreg:" in out and "kernels" in out


def test_kernels_of_a_model_in_a_user_file(tmp_path):
    model_file = tmp_path / "mymodel.py"
    model_file.write_text(textwrap.dedent("""
        import numpy as np
        import ops as O
        from runtime.training.zoo import Model

        def loss(w, x, y):
            return O.cross_entropy(O.tanh(O.linear(x, w)), y)

        def build():
            return Model("tiny", loss, lambda rng: [rng.standard_normal((10, 64)).astype(np.float32)])
    """))
    assert main(["kernels", f"{model_file}:build", "--out", str(tmp_path / "out"), "--batch-size", "4"]) == 0
    files = _read_tree(tmp_path / "out")
    assert any("from mymodel.py:" in text for name, text in files.items() if name.startswith("kernels"))


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    assert main(["kernels", "alexnet", "--out", str(tmp_path)]) == 2
    assert "unknown model 'alexnet'" in capsys.readouterr().err
    assert not os.listdir(tmp_path)                          # nothing half-written


def test_kernels_with_autotune_logs_each_choice_and_a_second_run_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path / "cache"))
    for out in ("a", "b"):
        assert main(["kernels", "resnet", "--out", str(tmp_path / out), "--batch-size", "64", "--autotune"]) == 0
    first, second = _read_tree(tmp_path / "a"), _read_tree(tmp_path / "b")
    log = first["06_autotune.txt"]
    tuned = [line.split(":")[0] for line in log.splitlines() if line.endswith("measured by this compile")]
    assert tuned and all(name.startswith("k") and "conv2d" in name for name in tuned), log
    assert log.count("<- chosen") == len(tuned)
    # the second compile times nothing: the same choices, read from the cache, and the same kernels
    assert second["06_autotune.txt"].count("from the cache") == len(tuned)
    assert {n: t for n, t in first.items() if n.startswith("kernels")} == \
        {n: t for n, t in second.items() if n.startswith("kernels")}
