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
