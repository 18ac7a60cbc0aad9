"""Memory handed back between stages: glibc's heap arenas capped when `flows` is imported, freed pages returned."""

import ctypes.util
import os
import subprocess
import sys

import pytest

from tasks.freed_memory import cap_malloc_arenas, release_freed_memory

GLIBC = ctypes.util.find_library("c") is not None and sys.platform.startswith("linux")


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_the_arena_cap_is_set_by_glibc_and_follows_the_variables(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("ASG_MALLOC_ARENAS", raising=False)
    assert cap_malloc_arenas() == 2  # mallopt accepted it (returned 1)
    monkeypatch.setenv("ASG_MALLOC_ARENAS", "4")
    assert cap_malloc_arenas() == 4
    monkeypatch.setenv("ASG_MALLOC_ARENAS", "0")
    assert cap_malloc_arenas() == 0  # glibc's default kept
    monkeypatch.setenv("ASG_MALLOC_ARENAS", "2")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert cap_malloc_arenas() == 0  # glibc read the explicit variable itself
    monkeypatch.setenv("ASG_MALLOC_ARENAS", "two")
    with pytest.raises(ValueError, match="ASG_MALLOC_ARENAS must be a whole number .* got 'two'"):
        cap_malloc_arenas()
    release_freed_memory()  # and the trim runs after it


def test_importing_flows_caps_the_arenas_with_mallopt():
    code = ("import tasks.freed_memory as m\n"
            "calls = []\n"
            "m._libc_function = lambda name: (lambda *args: calls.append(args) or 1)\n"
            "import flows\n"
            "print(calls)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "ASG_MALLOC_ARENAS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[(-8, 2)]"  # glibc's M_ARENA_MAX, 2 arenas, when the package is imported
