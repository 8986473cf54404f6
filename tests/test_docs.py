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


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "docs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_walkthrough_and_its_pictures_are_current():
    """docs/walkthrough.md is made by running the compiler: the page and the pictures' DOT text
    must be what the compiler makes today."""
    module = _load("make_walkthrough")
    _, step = module.build()
    with open(os.path.join(ROOT, "docs", "walkthrough.md")) as f:
        assert f.read() == module.render(step), "docs/walkthrough.md is stale: run `python docs/make_walkthrough.py`"
    for name, text in module.pictures(step).items():
        with open(os.path.join(ROOT, "docs", "images", f"{name}.dot")) as f:
            assert f.read() == text, f"docs/images/{name}.dot is stale: run `python docs/make_walkthrough.py`"


def test_every_picture_and_page_a_doc_links_to_exists():
    import re

    for page in os.listdir(os.path.join(ROOT, "docs")):
        if page.endswith(".md"):
            with open(os.path.join(ROOT, "docs", page)) as f:
                for target in re.findall(r"\]\(([^)#]+)\)", f.read()):
                    if not target.startswith("http"):
                        assert os.path.exists(os.path.join(ROOT, "docs", target)), f"{page} links to {target}"
