"""Every docstring example (`>>>`) in the packages runs and holds, as part of the default suite."""

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "models", "storage", "dashboards", "world", "text")
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for package in PACKAGES
                 for p in (ROOT / package).rglob("*.py") if ">>> " in p.read_text())


def test_the_packages_have_examples():
    assert len(MODULES) >= 25


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 0, f"{name}: its >>> lines are not in a docstring doctest finds"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (printed above)"
