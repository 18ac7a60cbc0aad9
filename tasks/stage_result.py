"""What stage tasks return: small references (table, version, row count) and metrics, never rows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StageResult:
    stage: str
    round_idx: int
    tables: dict[str, int]  # table name -> version after the stage's writes
    rows: int
    metrics: dict[str, float] = field(default_factory=dict)


def handed(stages: list[StageResult]) -> dict[str, int]:
    """table -> the version the latest of `stages` to write it left: what the next stage reads.

    >>> handed([StageResult("a", 0, {"x": 1, "y": 1}, 2), StageResult("b", 0, {"x": 3}, 1)])
    {'x': 3, 'y': 1}
    """
    return {table: version for stage in stages for table, version in stage.tables.items()}


@dataclass(frozen=True)
class ShardResult:
    """What one shard of a sharded stage staged (storage/shard_files.py), and which process ran it."""

    stage: str
    round_idx: int
    shard_idx: int
    n_shards: int
    rows: int
    pid: int = field(default_factory=os.getpid)
    backbone_loads: int = 0  # backbones this process had loaded when the shard finished
    seconds: float = 0.0  # wall time of the shard task
