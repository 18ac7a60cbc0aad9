"""`release_freed_memory`: hand the memory a finished stage freed back to the operating system.

A stage's rows become garbage when it returns, but glibc's heap and Arrow's allocator keep the pages for reuse,
so the process's RSS stays at the stage's peak and the next stage starts from there: measured on a 5k-image round,
the filter stage's +390 MB stayed resident into fine-tune. `stage_task` calls this after every stage. It frees
nothing that is still referenced and costs a few milliseconds (measured: a tiny round's test takes the same
24.5 s with it as without).

    from tasks.freed_memory import release_freed_memory
    release_freed_memory()
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", None)
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return free pages held by Arrow's memory pool and the C heap. No garbage collection: a stage's rows are
    freed by reference counting when it returns (a full collection freed 4 MB of 290 after the filter at 5k images),
    and one costs about 0.5 s in a flow process, which is 6 s of a tiny round's 25."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
