"""The version of the code that runs: the git commit of the checkout, or the installed package's version.

Uncommitted changes to tracked files are part of it ("<commit>-dirty-<hash of the diff>"), so two runs with
different edits never share a version (the stage cache and lineage both key on it).

    python -c "from tasks.code_version import code_version; print(code_version())"
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20,
                          check=True).stdout


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    if (REPO / ".git").exists():
        try:
            commit = _git("rev-parse", "HEAD").strip()
            diff = _git("diff", "HEAD", "--no-ext-diff", "--binary")
            return f"{commit}-dirty-{hashlib.sha1(diff.encode()).hexdigest()[:12]}" if diff else commit
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return f"asg=={importlib.metadata.version('asg')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
