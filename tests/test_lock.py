"""requirements.lock agrees with pyproject.toml: every declared dependency is pinned inside its range.

The lock (infra/regenerate_lock.sh writes it) is what the README's first command and .ci/run install with;
pyproject.toml keeps bounded ranges so `pip install asg` without the lock still resolves.
"""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# Installed by the user before the lock (a CPU or a CUDA build), so never pinned in it.
INSTALLED_FIRST = {"torch"}


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    return [Requirement(line) for line in lines]


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"requirements.lock: {line!r} is not an exact pin"
        pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def test_every_declared_dependency_is_pinned_inside_its_range():
    pins = _locked()
    for req in _declared():
        name = canonicalize_name(req.name)
        if name in INSTALLED_FIRST:
            assert name not in pins, f"{name} must not be pinned in the lock (users install their own build)"
            continue
        assert name in pins, f"{req.name} is declared in pyproject.toml but missing from requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject.toml's range {req.specifier}: "
            "run infra/regenerate_lock.sh")


def test_every_declared_range_is_bounded_above_and_below():
    for req in _declared():
        operators = {spec.operator for spec in req.specifier}
        assert operators & {">=", ">", "~=", "=="}, f"{req} has no lower bound"
        assert operators & {"<", "<=", "~=", "=="}, f"{req} has no upper bound"


def test_lock_keeps_cuda_out():
    pins = _locked()
    assert not [name for name in pins if name.startswith("nvidia-") or name in ("triton", "cuda-toolkit")]
