"""`release_freed_memory`: hand the memory a finished stage freed back to the operating system.

A stage's rows become garbage when it returns, but glibc's heap and Arrow's allocator keep the pages for reuse,
so the process's RSS stays at the stage's peak and the next stage starts from there: measured on a 5k-image round,
the filter stage's +390 MB stayed resident into fine-tune. `stage_task` calls this after every stage. It frees
nothing that is still referenced and costs a few milliseconds (measured: a tiny round's test takes the same
24.5 s with it as without).

    from tasks.freed_memory import release_freed_memory
    release_freed_memory()

`cap_malloc_arenas` (called when `flows` is imported, before the round starts its threads) limits glibc to
ASG_MALLOC_ARENAS heap arenas (default 2; 0 keeps glibc's default of 8 per core). Every thread that allocates
(LanceDB's, torch's) otherwise gets its own arena, and a trim cannot hand back pages that are fragmented across
them: merging 10x the PNG rows into LanceDB left +50 MB after `malloc_trim` with the default, +11 MB with 2
(`benchmarks/lancedb_retained_memory.py`). An explicit MALLOC_ARENA_MAX, which glibc reads itself, wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import pyarrow as pa


M_ARENA_MAX = -8  # glibc's mallopt parameter number


@functools.cache
def _libc_function(name: str):
    """A glibc function, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name, None)
    except OSError:
        return None


def cap_malloc_arenas() -> int:
    """Cap glibc's heap arenas at ASG_MALLOC_ARENAS (default 2); returns the cap set, 0 when none was (the variable
    is 0, MALLOC_ARENA_MAX is set, or the C library has no mallopt)."""
    raw = os.environ.get("ASG_MALLOC_ARENAS", "2")
    try:
        arenas = int(raw)
    except ValueError:
        raise ValueError(f"ASG_MALLOC_ARENAS must be a whole number of arenas (0: glibc's default), got {raw!r}")
    mallopt = _libc_function("mallopt")
    if arenas <= 0 or os.environ.get("MALLOC_ARENA_MAX") or mallopt is None:
        return 0
    return arenas if mallopt(M_ARENA_MAX, arenas) == 1 else 0


def release_freed_memory() -> None:
    """Return free pages held by Arrow's memory pool and the C heap. No garbage collection: a stage's rows are
    freed by reference counting when it returns (a full collection freed 4 MB of 290 after the filter at 5k images),
    and one costs about 0.5 s in a flow process, which is 6 s of a tiny round's 25."""
    pa.default_memory_pool().release_unused()
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)
