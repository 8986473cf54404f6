"""Imports go one way: ops <- compiler <- runtime (docs/architecture.md, "The layers").

The import graph is read from the source with `ast` (tests/import_graph.py): nothing is
imported, so these tests run in a fraction of a second and check a tree that may not even
import. Module-level and function-level imports count alike: an import inside a function
is still a dependency, it only runs later. Each failure lists every offending file:line.
"""
import html
import importlib.util
import os
import re

import pytest

from tests.import_graph import ROOT, all_imports, cycles, import_graph, layer_of, LAYERS, upward


@pytest.fixture(scope="module")
def imports():
    return all_imports()


@pytest.fixture(scope="module")
def graph(imports):
    return import_graph(imports=imports)


def _fail_with(title, lines):
    """Fail listing every offender on its own line (no repr of the list: it is for people)."""
    if lines:
        pytest.fail(f"{title} ({len(lines)}):\n  " + "\n  ".join(lines), pytrace=False)


def test_no_import_goes_up_a_layer(graph):
    """ops imports nothing from compiler or runtime; compiler nothing from runtime."""
    found = [f"{imp.describe()} imports {target} ({LAYERS[layer_of(target)]}) from {LAYERS[layer_of(importer)]}"
             for importer, target, edge in graph.edges(data=True) if upward(importer, target)
             for imp in edge["imports"]]
    _fail_with("imports from a lower layer to a higher one", sorted(found))


def test_no_two_modules_import_each_other(graph):
    """No cycle, direct or around a loop. A function-level import that closes a loop is still
    a cycle: moving an import into a function hides it from the interpreter, not from a reader."""
    found = []
    for part in cycles(graph):
        found.append("cycle: " + " <-> ".join(part))
        inside = graph.subgraph(part)
        found.extend(f"  {imp.describe()}{' (in a function)' if imp.in_function else ''}"
                     for _, _, edge in sorted(inside.edges(data=True), key=lambda e: e[:2])
                     for imp in edge["imports"])
    _fail_with("modules that import each other", found)


def test_every_import_inside_a_function_says_why(imports):
    """An import inside a function is for an optional heavy dependency, and says so in a
    comment on its line or the line above; `# noqa` alone is not a reason."""
    found = [imp.describe() for imp in imports
             if imp.in_function and not imp.type_checking and imp.reason is None]
    _fail_with("function-level imports without a reason comment", sorted(set(found)))


def test_compiler_imports_neither_torch_nor_triton_at_module_level(imports):
    """The compiler is pure passes over graphs: `import compiler` must not pull in torch or
    triton. Where a function needs one, it imports it there, with a reason."""
    found = [imp.describe() for imp in imports
             if layer_of(imp.importer) == LAYERS.index("compiler") and not imp.in_function
             and imp.target.split(".")[0] in ("torch", "triton")]
    _fail_with("module-level torch/triton imports in compiler/", sorted(set(found)))


def _load_make_architecture():
    spec = importlib.util.spec_from_file_location("make_architecture",
                                                  os.path.join(ROOT, "docs", "make_architecture.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_picture_is_current(graph):
    """docs/images/imports.dot is what docs/make_architecture.py draws from today's imports;
    the DOT text is compared, so the check does not depend on graphviz's version. The .svg
    must show the same modules and edges (graphviz writes each as a <title>)."""
    module = _load_make_architecture()
    text = module.dot_source(graph)
    dot_path = os.path.join(ROOT, "docs", "images", "imports.dot")
    assert os.path.exists(dot_path), "docs/images/imports.dot is missing: run `python docs/make_architecture.py`"
    with open(dot_path) as f:
        committed = f.read()
    if committed != text:
        old, new = set(committed.splitlines()), set(text.splitlines())
        changes = [f"- {line.strip()}" for line in sorted(old - new)] + [f"+ {line.strip()}" for line in sorted(new - old)]
        _fail_with("docs/images/imports.dot is stale: run `python docs/make_architecture.py`; lines that differ",
                   changes)
    svg_path = os.path.join(ROOT, "docs", "images", "imports.svg")
    assert os.path.exists(svg_path), ("docs/images/imports.svg is missing: run `python docs/make_architecture.py` "
                                      "where graphviz's `dot` is installed")
    with open(svg_path) as f:
        drawn = {html.unescape(t) for t in re.findall(r"<title>(.*?)</title>", f.read())}
    expected = module.svg_titles(graph)
    _fail_with("docs/images/imports.svg does not show what imports.dot says: run `python docs/make_architecture.py` "
               "where graphviz's `dot` is installed; titles that differ",
               [f"- {t}" for t in sorted(drawn - expected)] + [f"+ {t}" for t in sorted(expected - drawn)])


def test_the_walker_on_a_small_tree(tmp_path):
    """The walker itself: relative imports, `from package import submodule`, imports in a
    function or under TYPE_CHECKING, and what counts as a reason."""
    files = {
        "ops/__init__.py": "from . import ir\n",
        "ops/ir.py": "import numpy as np\n",
        "compiler/__init__.py": "",
        "compiler/codegen/__init__.py": "from .. import lower\nfrom ..lower import View\n",
        "compiler/lower.py": ("from typing import TYPE_CHECKING\nfrom ops import ir, Graph\n"
                              "if TYPE_CHECKING:\n    import runtime.app\n"
                              "class K:\n    import math\n"
                              "def f():\n    # heavy: only drawing needs it\n    import torch\n"
                              "    import triton  # noqa: F401\n    from runtime import app  # optional: the app\n"),
        "runtime/__init__.py": "",
        "runtime/app.py": "import compiler.codegen\n",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    imports = all_imports(str(tmp_path))
    got = {(i.importer, i.target, i.in_function, i.type_checking, i.reason is not None) for i in imports}
    assert ("ops", "ops.ir", False, False, False) in got
    assert ("compiler.codegen", "compiler.lower", False, False, False) in got
    assert ("compiler.lower", "ops.ir", False, False, False) in got          # a submodule
    assert ("compiler.lower", "ops", False, False, False) in got             # a name from ops/__init__.py
    assert ("compiler.lower", "runtime.app", False, True, False) in got      # TYPE_CHECKING
    assert ("compiler.lower", "math", False, False, False) in got            # a class body is module level
    assert ("compiler.lower", "torch", True, False, True) in got             # the reason is on the line above
    assert ("compiler.lower", "triton", True, False, False) in got           # `# noqa` is not a reason
    assert ("compiler.lower", "runtime.app", True, False, True) in got
    graph = import_graph(str(tmp_path), imports)
    assert upward("compiler.lower", "runtime.app") and graph.has_edge("compiler.lower", "runtime.app")
    assert cycles(graph) == [["compiler.codegen", "compiler.lower", "runtime.app"]]


COMPILE_WITHOUT_TORCH = r'''
import sys
sys.modules["torch"] = sys.modules["triton"] = None     # "import torch" raises ImportError
import numpy as np
from compiler.pipeline import Options, TARGETS, compile_function
from runtime.training import zoo

for name in zoo.ZOO:
    model = zoo.get(name)
    params = model.init(np.random.default_rng(0))
    texts = {}
    for target in ("interpret", "sm_80", "sm_90"):
        compiled = compile_function(model.loss, model.specs(params, 16), Options(
            grad_argnums=tuple(range(len(params))), target=TARGETS[target]))
        assert compiled.memory is not None and len(compiled.sources) == len(compiled.kernels) > 0, name
        texts[target] = compiled.sources
    assert texts["interpret"] == texts["sm_80"] == texts["sm_90"], name
    print(name, len(texts["interpret"]), "kernels")
assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
'''


def test_every_zoo_model_compiles_without_torch_or_triton_to_one_text_for_every_target():
    """The compiler compiles without torch or triton importable, and the kernel text does not
    depend on where it will run: the text a learner reads is the one a GPU compiles (what the
    interpreter changes at load time: runtime/executors/kernel_cache.py)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", COMPILE_WITHOUT_TORCH], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resnet" in done.stdout and "lenet" in done.stdout, done.stdout
