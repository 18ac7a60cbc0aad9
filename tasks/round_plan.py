"""Plan stage of a nightly round: which round index comes next.

The next index is one past the highest round that left rows in the store (a round that failed
and was never retried keeps its index and its rows; the next night moves on). The result is
persisted, so a retried flow run keeps the index it had.
"""

from __future__ import annotations

from storage.settings import Settings
from storage.tables import connect, read
from tasks.stage import stage_task

ROUND_TABLES = ("questions", "specs", "filter_decisions", "role_states")


@stage_task("plan", "plan-round")
def next_round_idx() -> int:
    db = connect(Settings.from_env())
    seen = [int(frame["round_idx"].max()) for frame in (read(db, t, columns=["round_idx"]) for t in ROUND_TABLES)
            if len(frame)]
    return max(seen) + 1 if seen else 0
