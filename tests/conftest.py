"""Shared test fixtures.

Inputs are drawn fresh on every run (never zeros, never the same numbers twice in a row);
the seed is printed with any failure so that a failing draw can be replayed with
CHAINRULE_TEST_SEED=<seed>.
"""
import os
import secrets

import numpy as np
import pytest

os.environ.setdefault("CHAINRULE_BACKEND", "reference")


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("CHAINRULE_TEST_SEED", secrets.randbits(32)))
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


@pytest.fixture
def without_dot(monkeypatch):
    """Pictures as if graphviz were not installed (compiler/render.py: find_dot is the one
    place that looks for it), with its once-per-process install advice not given yet."""
    from compiler import render  # the fixture's subject: conftest imports no chainrule module at load

    monkeypatch.setattr(render, "find_dot", lambda: None)
    monkeypatch.setattr(render, "_told_to_install", False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("random seed", f"replay with CHAINRULE_TEST_SEED={value}"))

