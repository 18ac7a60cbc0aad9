"""`stage_task`: the decorator of every stage task of a round.

It makes a stage resumable: results are persisted under a key of the round's inputs and code
(tasks/stage_cache.py), so when an operator retries a failed flow run (the Prefect UI's Retry, or
`set_flow_run_state(AwaitingRetry)`), or a user runs the same `asg round` again after a crash, stages that
already finished come back as `Cached` without running again. Stage results are small references
(`StageResult`), never tensors or images, so they pickle and cache.

It also carries a test-only fault point: a flow run whose parameters contain
`inject_fault={"stage": "<stage>", "while_exists": "<path>"}` fails in that stage for as long as
the file exists (see tests/test_operations.py). With `"kill_worker": true` the process running the
stage dies instead (after removing the file, so the rescheduled attempt passes): how
tests/test_sharding.py kills a Dask worker in the middle of a shard. With `"once": true` the stage removes the
file and raises: one transient failure, which a shard task's own retries absorb.

After a stage returns, the memory it freed goes back to the operating system (tasks/freed_memory.py).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from prefect import task

from tasks.freed_memory import release_freed_memory
from tasks.stage_cache import STAGE_CACHE
from tasks.stage_result import ShardResult, StageResult


class InjectedFault(RuntimeError):
    """Raised by a stage when the flow run asked for a fault there (tests of resume and retry)."""


def fault_point(stage: str) -> None:
    from prefect.runtime import flow_run

    fault = (flow_run.parameters or {}).get("inject_fault") if flow_run.id else None
    if not fault:
        return
    marker = Path(str(fault.get("while_exists", "")))
    if fault.get("stage") == stage and marker.exists():
        if fault.get("kill_worker"):
            marker.unlink()
            os._exit(17)
        if fault.get("once"):
            marker.unlink()
        raise InjectedFault(f"injected fault in stage {stage!r} (it passes once {marker} is removed)")


def timed(result, seconds: float):
    """A stage's result with its wall time: `seconds` in a StageResult's metrics, or a ShardResult's field."""
    if isinstance(result, StageResult):
        return replace(result, metrics={**result.metrics, "seconds": seconds})
    if isinstance(result, ShardResult):
        return replace(result, seconds=seconds)
    return result


def stage_task(stage: str, name: str, **options) -> Callable:
    """A Prefect task named `name` for round stage `stage`, with persisted results and the fault point."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            fault_point(stage)
            started = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                release_freed_memory()  # the next stage starts from this one's baseline, not its peak
            return timed(result, time.perf_counter() - started)

        return task(name=name, persist_result=True, cache_policy=STAGE_CACHE, **options)(run)

    return decorate
