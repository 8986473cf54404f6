"""The command line misused: a user model with a shape error, an output path that is a file,
an unwritable cache, Ctrl-C during training (and --resume), a diverging run, subcommands that
must agree on MODEL, and help that documents every option. In-process (`main([...])`), on the
reference backend, with one or two short epochs."""
import argparse
import os
import signal

import pytest

from ops import layers as L
from ops.errors import BackendError
from runtime import cli
from runtime.cli import main
from runtime.executors import autotune, kernel_cache
from runtime.training import checkpoint, loop
from runtime.training.data import blobs, split
from runtime.training.loop import NonFiniteLossError, fit
from runtime.training.zoo import model_names

BAD_MODEL = """\
from ops import layers as L


def build():
    return L.Sequential(L.Flatten(),
                        L.Dense(60, 10),
                        input_shape=(1, 8, 8))
"""

GOOD_MODEL = """\
from ops import layers as L


def tiny():
    return L.Sequential(L.Flatten(), L.Dense(64, 10), input_shape=(1, 8, 8))
"""


def _tree(root):
    """path -> bytes of every file under root."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


# -- 1. a user's model file is the user's code ------------------------------------------------------

@pytest.mark.parametrize("command", [["train", "--epochs", "1", "--backend", "reference"],
                                     ["graph", "--out", "OUT", "--format", "dot"],
                                     ["kernels", "--out", "OUT", "--backend", "reference"]])
def test_a_shape_error_in_a_user_model_file_names_the_users_line(tmp_path, capsys, command):
    path = tmp_path / "bad_model.py"
    path.write_text(BAD_MODEL)
    argv = [command[0], f"{path}:build"] + [str(tmp_path / "out") if a == "OUT" else a for a in command[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Dense(60, 10) expects an input of shape (None, 60)" in err and "got (None, 64)" in err
    assert "bad_model.py:6" in err and "L.Dense(60, 10)" in err       # the user's line, not the CLI's
    assert "sys.exit" not in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")                       # nothing written


# -- 2. an output path that is a file -------------------------------------------------------------

@pytest.mark.parametrize("command", [["train", "logreg", "--epochs", "1"], ["kernels", "logreg"],
                                     ["graph", "logreg"], ["bench", "--quick"]])
@pytest.mark.parametrize("under", [False, True])
def test_an_out_path_that_is_a_file_is_a_usage_error_and_nothing_is_written(tmp_path, capsys, command, under):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    out = existing / "run" if under else existing
    with pytest.raises(SystemExit) as info:
        main(command + ["--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {out}:" in err and "is a file" in err and "Traceback" not in err
    assert existing.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["results.txt"]


def test_resume_from_a_folder_that_does_not_exist_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "logreg", "--resume", str(tmp_path / "nowhere")])
    assert info.value.code == 2 and "--resume" in capsys.readouterr().err


# -- 3. an unwritable kernel cache -------------------------------------------------------------------

def _unwritable_cache(tmp_path, monkeypatch, how):
    """A cache folder this process cannot write. chmod 0o500 does not stop root (the tests may
    run as root), so "readonly" also makes os.access report it unwritable, as it does for a
    normal user; "under_a_file" puts it below a file, where makedirs fails for anyone."""
    if how == "under_a_file":
        (tmp_path / "a_file").write_text("x")
        return str(tmp_path / "a_file" / "cache")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if os.fspath(path) == str(folder)
                        else real_access(path, mode))
    return str(folder)


@pytest.mark.parametrize("how", ["readonly", "under_a_file"])
def test_an_unwritable_cache_dir_falls_back_to_a_per_user_temporary_one_with_a_warning(tmp_path, monkeypatch,
                                                                                       capsys, how):
    bad = _unwritable_cache(tmp_path, monkeypatch, how)
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", bad)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(kernel_cache, "_warned", set())
    folder = kernel_cache.cache_dir()
    assert folder.startswith(str(tmp_path / "tmp")) and folder.endswith(os.path.join("kernels"))
    assert f"chainrule-{os.getuid()}" in folder
    path = kernel_cache.store("x = 1\n")                   # a kernel can be cached there
    assert os.path.dirname(path) == folder and open(path).read() == "x = 1\n"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write the kernel cache {bad}" in err and "CHAINRULE_CACHE_DIR" in err
    kernel_cache.cache_dir()
    assert capsys.readouterr().err == ""                    # warned once
    monkeypatch.setattr(autotune, "device_name", lambda target: "test device")
    tuned = autotune.cache_path("kernel text", None)        # the tuning cache follows it
    assert tuned.startswith(os.path.join(folder, "tuned"))
    if how == "readonly":
        assert os.listdir(bad) == []


def test_a_cache_that_cannot_be_written_anywhere_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "a_file"))      # the fallback is under a file too
    with pytest.raises(BackendError, match=r"cannot write the kernel cache .*a_file/cache .* nor .*chainrule-"):
        kernel_cache.cache_dir()


def test_a_writable_cache_dir_is_used_without_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAINRULE_CACHE_DIR", str(tmp_path / "cache"))
    assert kernel_cache.cache_dir() == str(tmp_path / "cache")
    assert capsys.readouterr().err == ""


# -- 4. Ctrl-C, --resume, and a diverging run ---------------------------------------------------------

def _interrupt_at(monkeypatch, epoch, step):
    """Ctrl-C (a real SIGINT to this process) while the given step of the given epoch runs."""
    check = loop.check_finite

    def interrupting(value, e, k, **kwargs):
        if (e, k) == (epoch, step):
            signal.raise_signal(signal.SIGINT)
        return check(value, e, k, **kwargs)
    monkeypatch.setattr(loop, "check_finite", interrupting)


def _history_lines(out):
    return [line for line in out.splitlines() if line.lstrip().startswith("epoch ") and "/3" in line]


def test_ctrl_c_says_where_it_stopped_and_resume_finishes_the_same_run(tmp_path, monkeypatch, capsys):
    run = ["train", "logreg", "--epochs", "3", "--backend", "reference"]
    assert main(run) == 0
    uninterrupted = _history_lines(capsys.readouterr().out)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, epoch=2, step=3)
        assert main(run + ["--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == (f"chainrule: interrupted at epoch 2, step 3; the checkpoint of epoch 1 is in {out} "
                           f"(resume with: chainrule train logreg --resume {out})")
    arrays, meta = checkpoint.load(out / "checkpoint.npz")        # whole, nothing half-written
    assert meta["epoch"] == 1 and meta["model"] == "logreg" and any(n.startswith("opt/") for n in arrays)
    assert os.listdir(out) == ["checkpoint.npz"]

    assert main(["train", "logreg", "--resume", str(out), "--backend", "reference"]) == 0
    captured = capsys.readouterr()
    assert "resuming after epoch 1 (of 3)" in captured.out
    resumed = _history_lines(captured.out)
    assert [line.split("(")[0] for line in resumed] == [line.split("(")[0] for line in uninterrupted[1:]]
    assert checkpoint.load(out / "checkpoint.npz")[1]["epoch"] == 3
    report = (out / "report.txt").read_text()
    assert report.startswith("confusion matrix (rows: true class, columns: predicted)")
    assert "precision" in report and "macro avg" in report


def test_ctrl_c_without_out_says_nothing_was_saved(monkeypatch, capsys):
    _interrupt_at(monkeypatch, epoch=1, step=2)
    assert main(["train", "logreg", "--epochs", "2", "--backend", "reference"]) == 130
    err = capsys.readouterr().err
    assert "interrupted at epoch 1, step 2; no checkpoint was written (train with --out DIR" in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def logreg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("logreg_run")
    assert main(["train", "logreg", "--epochs", "1", "--backend", "reference", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("argv, message", [
    (["train", "mlp"], "a checkpoint of the model 'logreg', not 'mlp'"),
    (["train", "logreg", "--optimizer", "sgd"], "--optimizer sgd: the run in"),
    (["train", "logreg", "--batch-size", "16"], "--batch-size 16: the run in"),
    (["train", "logreg", "--epochs", "1"], "already holds epoch 1 of 1"),
])
def test_resume_refuses_another_model_or_settings_and_leaves_the_checkpoint_alone(logreg_run, capsys, argv,
                                                                                  message):
    before = _tree(logreg_run)
    assert main(argv + ["--resume", str(logreg_run), "--backend", "reference"]) == 2
    assert message in capsys.readouterr().err
    assert _tree(logreg_run) == before


def test_resume_refuses_a_checkpoint_of_another_shape(tmp_path):
    data = split(*blobs(n=96, centers=3, seed=0), seed=0)
    fit(L.Sequential(L.Dense(2, 8), L.Tanh(), L.Dense(8, 3), input_shape=(2,)).init(0), data, epochs=1,
        batch_size=16, backend="reference", out=str(tmp_path), log=lambda line: None, progress=False)
    saved = checkpoint.load(tmp_path / "checkpoint.npz")
    other = L.Sequential(L.Dense(2, 5), L.Tanh(), L.Dense(5, 3), input_shape=(2,)).init(0)
    with pytest.raises(Exception, match=r"has shape \(8, 2\) but this model's has \(5, 2\)"):
        fit(other, data, epochs=2, batch_size=16, backend="reference", resume=saved, log=lambda line: None,
            progress=False)


def test_a_non_finite_loss_names_the_epoch_the_step_and_the_examples_of_the_batch():
    import ops as O

    data = split(*blobs(n=128, centers=3, seed=0), seed=0)
    model = L.Sequential(L.Dense(2, 3), input_shape=(2,)).init(0)

    def explosive(output, target):
        return O.mean(O.exp(output)) + 0.0 * O.sum(target)
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, data, epochs=20, batch_size=16, optimizer="sgd", lr=50.0, loss=explosive, backend="reference",
            log=lambda line: None, progress=False)
    text = str(info.value)
    step = int(text.split(", step ")[1].split(" ")[0])
    first = (step - 1) * 16
    assert f"(batch {step}: examples {first}..{first + 15} of the shuffled training set)" in text


# -- 5. every subcommand takes the same MODEL -----------------------------------------------------------

@pytest.mark.parametrize("command", ["graph", "kernels"])
def test_graph_and_kernels_take_what_train_takes(tmp_path, capsys, command):
    path = tmp_path / "my_model.py"
    path.write_text(GOOD_MODEL)
    extra = ["--format", "dot"] if command == "graph" else ["--backend", "reference"]
    for model in (f"{path}:tiny", "autoencoder"):
        out = tmp_path / f"out_{len(os.listdir(tmp_path))}"
        assert main([command, model, "--out", str(out), "--batch-size", "8"] + extra) == 0, capsys.readouterr().err
        assert os.listdir(out)


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["graph", "--out", "OUT"],
                                     ["kernels", "--out", "OUT"]])
def test_an_unknown_model_lists_every_valid_name_in_every_subcommand(tmp_path, capsys, command):
    argv = [command[0], "alexnet"] + [str(tmp_path / "out") if a == "OUT" else a for a in command[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown model 'alexnet'" in err and "path/to/file.py:function" in err
    assert all(name in err for name in model_names())
    assert not os.path.exists(tmp_path / "out")


def test_a_file_function_returning_something_else_names_both_accepted_forms(tmp_path, capsys):
    path = tmp_path / "nothing.py"
    path.write_text("def build():\n    return 3\n")
    assert main(["graph", f"{path}:build", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "build() returned 3" in err and "ops.layers model" in err and "zoo.Model" in err


# -- 6. help ------------------------------------------------------------------------------------------

def _subcommands():
    return cli.build_parser().subcommands


@pytest.mark.parametrize("name", ["demo", "kernels", "train", "graph", "bench"])
def test_every_option_of_every_subcommand_is_described_with_its_default(name, capsys):
    parser = _subcommands()[name]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.dest} has no description"
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.default not in (None, argparse.SUPPRESS) \
                and not isinstance(action, argparse._HelpAction):
            shown = f"(default: {action.default})"
            assert shown in " ".join(text.split()), f"{name} {action.dest}: {shown} missing"


def test_train_help_shows_the_default_epochs_and_every_model():
    text = " ".join(_subcommands()["train"].format_help().split())
    assert "(default: 15)" in text
    for command in ("train", "graph", "kernels"):
        help_text = " ".join(_subcommands()[command].format_help().split())
        assert all(name in help_text for name in model_names()), command


def test_the_subcommands_agree_on_backend_and_seed():
    commands = _subcommands()

    def option(name, dest):
        return next((a for a in commands[name]._actions if a.dest == dest), None)
    backends = {name: tuple(option(name, "backend").choices) for name in ("train", "graph", "kernels")}
    assert len(set(backends.values())) == 1, backends
    assert all(option(name, "seed") is not None for name in ("train", "graph", "kernels", "demo"))


def test_the_resume_checkpoint_of_a_plain_fit_is_refused_by_the_command(tmp_path, capsys):
    data = split(*blobs(n=96, centers=3, seed=0), seed=0)
    fit(L.Sequential(L.Dense(2, 3), input_shape=(2,)).init(0), data, epochs=1, batch_size=16,
        backend="reference", out=str(tmp_path), log=lambda line: None, progress=False)
    assert main(["train", "logreg", "--resume", str(tmp_path)]) == 2
    assert "cannot be resumed: it does not record model" in capsys.readouterr().err


def test_train_says_why_it_cannot_train_a_loss_function_model_that_graph_compiles(tmp_path, capsys):
    path = tmp_path / "loss_model.py"
    path.write_text("import numpy as np\nimport ops as O\nfrom runtime.training.zoo import Model\n\n\n"
                    "def build():\n    return Model('tiny', lambda w, x, y: O.cross_entropy(O.linear(x, w), y),\n"
                    "                 lambda rng: [rng.standard_normal((10, 64)).astype(np.float32)])\n")
    assert main(["graph", f"{path}:build", "--out", str(tmp_path / "graphs"), "--format", "dot"]) == 0
    assert main(["train", f"{path}:build", "--epochs", "1", "--backend", "reference"]) == 2
    err = capsys.readouterr().err
    assert "build() returned a runtime.training.zoo.Model" in err and "return an ops.layers model" in err
