"""The sharded-stage runner: one place owns how a rollout stage is split, run, staged and merged.

A stage is two Prefect-free functions in its own module, declared with `sharded_stage`:
- `shard(settings, shard_idx, n_shards, **shard_args) -> {table: rows}`: the model calls for one shard's items
  (rows as dicts, or as Arrow made a chunk at a time with `storage.arrow_rows.ArrowRows`);
- `merge(settings, staged, **merge_args) -> StageResult`: the round-wide step over every shard's rows
  (`staged`, a `StagedRows`), which makes the stage's upserts and returns its small result.

`run_stage(stage, n_shards, namespace, shard_args, merge_args)` runs it:
- with one shard, as a single Prefect task named after the stage (`solve-and-vote`): the shard's rows go
  straight to the merge, with no staging file;
- with several, as one task per shard (`solve-and-vote-shard`) on the flow's task runner (called in the flow's
  thread by the in-process runner, submitted to Dask or Ray otherwise), each staging its rows in Parquet
  (storage/shard_files.py), then the merge task, which waits for them (`wait_for`) and reads the staged rows.
Every task is a `stage_task` (persisted, resumable results and the test-only fault point), and the merged
result carries how the shards ran (count, processes, backbone loads, seconds). A shard task that fails is retried
(`SHARD_RETRIES` times, `SHARD_RETRY_DELAY_S` apart) before the stage fails: a shard only reads its inputs and
overwrites its own staging file, so a retry is safe, and one flaky worker or object-store call does not cost the
round.

    from tasks.solve import SOLVE
    result = run_stage(SOLVE, 4, "", shard_args={"round_idx": 0, "checkpoint_uri": ckpt}, merge_args={"round_idx": 0})
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import pandas as pd
import pyarrow as pa

from storage.settings import Settings
from storage.shard_files import read_shard_tables, read_shards, rows_table, write_shard
from tasks.round_inputs import backbone_loads
from tasks.stage import stage_task
from tasks.stage_result import ShardResult, StageResult


SHARD_RETRIES, SHARD_RETRY_DELAY_S = 2, 2


class StagedRows:
    """Every shard's rows of a stage, by table: held in memory (one shard) or read back from the staging files."""

    def __init__(self, settings: Settings, round_idx: int, folder: str, n_shards: int,
                 memory: dict[str, pa.Table] | None = None):
        self.settings, self.round_idx, self.folder, self.n_shards = settings, round_idx, folder, n_shards
        self._memory = memory

    def frames(self, table: str, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Each shard's rows of `table` (optionally some columns), in shard order: one frame in memory at a time."""
        if self._memory is None:
            yield from read_shards(self.settings, self.round_idx, self.folder, table, self.n_shards, columns)
            return
        data = self._memory.get(table, pa.table({}))
        yield data.select(columns).to_pandas() if columns and data.num_columns else data.to_pandas()

    def table(self, table: str, sort_by: str | list[str] | None = None) -> pa.Table:
        """All shards' rows of `table` as one Arrow table, optionally sorted by a column or columns (ascending):
        what a merge step upserts without turning rows into dicts (an empty table without columns when no shard
        wrote any)."""
        if self._memory is None:
            parts = [t for t in read_shard_tables(self.settings, self.round_idx, self.folder, table, self.n_shards)
                     if t.num_columns]
        else:
            parts = [t for t in [self._memory.get(table, pa.table({}))] if t.num_columns]
        if not parts:
            return pa.table({})
        data = pa.concat_tables(parts, promote_options="permissive")
        if sort_by and data.num_rows:
            keys = [sort_by] if isinstance(sort_by, str) else list(sort_by)
            data = data.sort_by([(k, "ascending") for k in keys])
        return data


@dataclass(frozen=True)
class ShardedStage:
    stage: str  # the metric prefix and fault point ("solve"; its shards: "solve-shard")
    task_name: str  # the Prefect task ("solve-and-vote"; its shards: "solve-and-vote-shard")
    shard: Callable[..., dict[str, list[dict] | pa.Table]]
    merge: Callable[..., StageResult]
    counted: tuple[str, ...]  # the tables whose rows a shard reports as its row count
    # (round_idx, folder) of the stage's staging files, from its shard arguments
    staging: Callable[[dict], tuple[int, str]]
    tasks: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def sharded_stage(stage: str, task_name: str, shard: Callable, merge: Callable, counted: str | tuple[str, ...],
                  folder: str | None = None, staging: Callable[[dict], tuple[int, str]] | None = None) -> ShardedStage:
    """Declare a stage (its staging folder defaults to the stage's name under the round of `round_idx`)."""
    folder = folder or stage
    counted = (counted,) if isinstance(counted, str) else tuple(counted)
    spec = ShardedStage(stage, task_name, shard, merge, counted,
                        staging or (lambda args: (args["round_idx"], folder)))

    @stage_task(f"{stage}-shard", f"{task_name}-shard", retries=SHARD_RETRIES, retry_delay_seconds=SHARD_RETRY_DELAY_S)
    def shard_task(stage: str, shard_idx: int, n_shards: int, shard_args: dict, namespace: str = "") -> ShardResult:
        settings = Settings.from_env().within(namespace)
        tables = spec.shard(settings, shard_idx, n_shards, **shard_args)
        round_idx, staged_in = spec.staging(shard_args)
        for table, rows in tables.items():
            write_shard(settings, round_idx, staged_in, table, shard_idx, n_shards, rows)
        return ShardResult(stage, round_idx, shard_idx, n_shards, _counted(spec, tables),
                           backbone_loads=backbone_loads())

    @stage_task(stage, task_name)
    def merge_task(stage: str, n_shards: int, shard_args: dict, merge_args: dict,
                   namespace: str = "") -> StageResult:
        settings = Settings.from_env().within(namespace)
        round_idx, staged_in = spec.staging(shard_args)
        return spec.merge(settings, StagedRows(settings, round_idx, staged_in, n_shards), **merge_args)

    @stage_task(stage, task_name)
    def whole_task(stage: str, shard_args: dict, merge_args: dict, namespace: str = "") -> StageResult:
        settings = Settings.from_env().within(namespace)
        started = time.perf_counter()
        tables = spec.shard(settings, 0, 1, **shard_args)
        round_idx, staged_in = spec.staging(shard_args)
        shard = ShardResult(stage, round_idx, 0, 1, _counted(spec, tables), backbone_loads=backbone_loads(),
                            seconds=time.perf_counter() - started)
        memory = {table: rows_table(rows) for table, rows in tables.items()}
        del tables  # the rows live on as Arrow tables only
        result = spec.merge(settings, StagedRows(settings, round_idx, staged_in, 1, memory), **merge_args)
        return with_shard_metrics(result, [shard])

    spec.tasks.update(shard=shard_task, merge=merge_task, whole=whole_task)
    return spec


def _counted(spec: ShardedStage, tables: dict[str, list[dict] | pa.Table]) -> int:
    return sum(len(tables.get(table, [])) for table in spec.counted)


def _in_flow_thread() -> bool:
    """Whether shard tasks run one after another in the flow's thread: the in-process runner, or no flow (torch's
    CPU kernels run about 1.4x slower from a worker thread, whose OpenMP team is created anew)."""
    from prefect.context import FlowRunContext
    from prefect.task_runners import ThreadPoolTaskRunner

    context = FlowRunContext.get()
    return context is None or isinstance(context.task_runner, ThreadPoolTaskRunner)


def with_shard_metrics(result: StageResult, shards: list[ShardResult]) -> StageResult:
    """The merge step's result plus how its shards ran (logged with the stage's metrics)."""
    return replace(result, metrics={**result.metrics, "shards": len(shards),
                                    "shard_processes": len({s.pid for s in shards}),
                                    "shard_backbone_loads_max": max(s.backbone_loads for s in shards),
                                    "shard_seconds_sum": sum(s.seconds for s in shards),
                                    "shard_seconds_max": max(s.seconds for s in shards)})


def run_stage(spec: ShardedStage, n_shards: int, namespace: str = "", shard_args: dict | None = None,
              merge_args: dict | None = None) -> StageResult:
    """Run a sharded stage over `n_shards` shards (see the module docstring) and return its merged result."""
    shard_args, merge_args = dict(shard_args or {}), dict(merge_args or {})
    if n_shards < 1:
        raise ValueError(f"shards must be at least 1, got {n_shards}")
    if n_shards == 1:
        return spec.tasks["whole"](spec.stage, shard_args, merge_args, namespace=namespace)
    shard_task = spec.tasks["shard"]
    if _in_flow_thread():
        shards = [shard_task(spec.stage, s, n_shards, shard_args, namespace=namespace) for s in range(n_shards)]
        wait_for = None
    else:
        wait_for = [shard_task.submit(spec.stage, s, n_shards, shard_args, namespace=namespace)
                    for s in range(n_shards)]
        shards = [f.result() for f in wait_for]
    result = spec.tasks["merge"](spec.stage, n_shards, shard_args, merge_args, namespace=namespace,
                                 wait_for=wait_for)
    return with_shard_metrics(result, shards)
