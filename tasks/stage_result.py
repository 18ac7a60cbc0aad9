"""What a stage task returns: small references (table, version, row count) and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StageResult:
    stage: str
    round_idx: int
    tables: dict[str, int]  # table name -> version after the stage's writes
    rows: int
    metrics: dict[str, float] = field(default_factory=dict)
